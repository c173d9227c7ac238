//! The user's Sigma rules in watch: each exec (`process_creation`), new
//! connect (`network_connection`) and write seen by the write hook
//! (`file_event`) fills the one reusable event and runs the category's
//! engine; a match is raised like every other live finding.
use std::io;

use super::{SeenConnect, Watcher};
use crate::{
    detect::sigma::{fields, Category, Field, SigmaEvent, SigmaRules},
    model::{HostStr, Process, ProcessId},
};

/// The loaded rules and the event buffer they are evaluated on.
pub(super) struct LiveSigma {
    pub rules: SigmaRules,
    event: SigmaEvent,
}

impl LiveSigma {
    pub fn new(rules: SigmaRules) -> Self {
        LiveSigma {
            rules,
            event: SigmaEvent::new(),
        }
    }
}

impl Watcher {
    fn sigma_wants(&self, category: Category) -> bool {
        self.sigma
            .as_ref()
            .is_some_and(|s| s.rules.has_rules(category))
    }

    /// Fills the process fields of `id` and evaluates `category`; `extra`
    /// adds the event's own fields.
    fn sigma_run(
        &mut self,
        category: Category,
        event: &'static str,
        id: ProcessId,
        extra: impl FnOnce(&mut SigmaEvent),
    ) -> io::Result<()> {
        let Some(sigma) = self.sigma.as_mut() else {
            return Ok(());
        };
        let wants_parent = sigma.rules.uses(category, Field::ParentImage)
            || sigma.rules.uses(category, Field::ParentCommandLine);
        if wants_parent {
            self.table.read_pending_details(&id);
        }
        let Some(p) = self.table.by_id(&id) else {
            return Ok(());
        };
        let parent = self
            .table
            .parent_of(&id)
            .and_then(|pp| self.table.by_id(&pp));
        let ev = &mut sigma.event;
        ev.clear();
        let user = sigma
            .rules
            .uses(category, Field::User)
            .then(|| self.users.name(p.uid));
        fields::fill_process(ev, p, parent, user.as_ref());
        if sigma.rules.uses(category, Field::CurrentDirectory) {
            fields::fill_cwd(ev, p.pid);
        }
        extra(ev);
        let table = &self.table;
        let found = sigma.rules.findings(category, ev, p, || {
            table.ancestry(&id).into_iter().cloned().collect()
        });
        for finding in found {
            self.raise(event, finding)?;
        }
        Ok(())
    }

    pub(super) fn sigma_exec(&mut self, id: ProcessId) -> io::Result<()> {
        if !self.sigma_wants(Category::ProcessCreation) {
            return Ok(());
        }
        self.sigma_run(Category::ProcessCreation, "exec", id, |_| {})
    }

    pub(super) fn sigma_connect(&mut self, c: &SeenConnect) -> io::Result<()> {
        if !self.sigma_wants(Category::NetworkConnection) {
            return Ok(());
        }
        let Some(id) = self.ensure_known(c.pid, |t| t.get(c.pid).map(Process::id)) else {
            return Ok(());
        };
        let domain: Option<HostStr> = self
            .dns
            .as_mut()
            .and_then(|d| d.names(c.daddr).first().cloned());
        self.sigma_run(Category::NetworkConnection, "connect", id, |ev| {
            ev.set_display(Field::DestinationIp, c.daddr);
            ev.set_num(Field::DestinationPort, u64::from(c.dport));
            if let Some(d) = &domain {
                ev.set_host(Field::DestinationHostname, d);
            }
            ev.set_display(Field::SourceIp, c.saddr);
            if c.sport != 0 {
                ev.set_num(Field::SourcePort, u64::from(c.sport));
            }
            ev.set(Field::Initiated, b"true");
            ev.set(Field::Protocol, c.protocol.as_bytes());
        })
    }

    pub(super) fn sigma_write(&mut self, pid: u32, path: &std::path::Path) -> io::Result<()> {
        if !self.sigma_wants(Category::FileEvent) || pid == 0 {
            return Ok(());
        }
        let Some(id) = self.ensure_known(pid, |t| t.latest(pid).map(|p| p.id())) else {
            return Ok(());
        };
        self.sigma_run(Category::FileEvent, "write", id, |ev| {
            ev.set(
                Field::TargetFilename,
                std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()),
            );
        })
    }
}

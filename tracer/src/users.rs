//! User names from `/etc/passwd`, read directly: libc's getpwuid goes
//! through NSS and `/etc/ld.so.preload`, both of which an intruder controls.
use std::collections::HashMap;

use crate::model::HostStr;

#[derive(Default, Clone)]
pub struct Users {
    names: HashMap<u32, HostStr>,
    /// Every home directory given for a uid: a second account on uid 0
    /// (a classic backdoor) has a home of its own worth searching.
    homes: HashMap<u32, Vec<String>>,
}

impl Users {
    pub fn load() -> Self {
        let text = crate::proc::read_file("/etc/passwd").unwrap_or_default();
        Self::parse(HostStr::from_bytes(&text).as_str())
    }

    pub fn parse(passwd: &str) -> Self {
        let mut users = Users::default();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            let Some(uid) = f.get(2).and_then(|u| u.parse::<u32>().ok()) else {
                continue;
            };
            // The first account for a uid names it, as getpwuid does.
            users
                .names
                .entry(uid)
                .or_insert_with(|| HostStr::from_text(f[0]));
            if let Some(home) = f.get(5) {
                let homes = users.homes.entry(uid).or_default();
                if !homes.iter().any(|h| h == home) {
                    homes.push(home.to_string());
                }
            }
        }
        users
    }

    /// Every account's home directory, root's first, then by uid.
    pub fn all_homes(&self) -> Vec<String> {
        let mut uids: Vec<u32> = self.homes.keys().copied().collect();
        uids.sort_unstable();
        uids.iter()
            .flat_map(|u| self.homes[u].iter().cloned())
            .collect()
    }

    /// The home directories passwd gives for `uid`, in file order.
    pub fn homes(&self, uid: u32) -> &[String] {
        self.homes.get(&uid).map(Vec::as_slice).unwrap_or_default()
    }

    /// The user's name, or the numeric uid when it has none.
    pub fn name(&self, uid: u32) -> HostStr {
        match self.names.get(&uid) {
            Some(n) => n.clone(),
            None => uid.to_string().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_passwd_and_fall_back_to_numbers() {
        let u = Users::parse("root:x:0:0:root:/root:/bin/bash\nbad line\nnobody:x:65534:65534::/:/usr/sbin/nologin\n");
        assert_eq!(u.name(0), "root");
        assert_eq!(u.name(65534), "nobody");
        assert_eq!(u.name(1234), "1234");
    }

    #[test]
    fn a_second_uid_0_account_keeps_roots_name_but_adds_its_home() {
        let u = Users::parse("root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/var/.toor:/bin/sh\n");
        assert_eq!(u.name(0), "root");
        assert_eq!(u.homes(0), ["/root", "/var/.toor"]);
        assert!(u.homes(5).is_empty());
    }
}

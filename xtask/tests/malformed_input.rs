//! Malformed input to every command that takes some, through the real command line: `lab qmp`
//! arguments, `lab cp` operands, `--lab` names, lab commands without a running lab, `model decode`
//! and `model eval` input, and recipes (and their lock) in `images/`. Each must exit 1 (clap's own errors 2; `lab status` of no lab
//! 3) with a message naming what is wrong (file, line and field for a recipe), and never panic.
//! Needs nothing: no lab is started.

mod scratch;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;

use scratch::Scratch;

/// One row: arguments, the exit code wanted, and what stderr must say.
struct Case {
    arguments: Vec<OsString>,
    code: i32,
    says: Vec<String>,
}

fn case(arguments: &[&str], code: i32, says: &[&str]) -> Case {
    Case {
        arguments: arguments.iter().map(OsString::from).collect(),
        code,
        says: says.iter().map(|text| (*text).to_owned()).collect(),
    }
}

fn run_table(scratch: &Scratch, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(&case.arguments)
            .env("CXL_LAB_IMAGES", &scratch.images)
            .env("CXL_LAB_CACHE", &scratch.cache)
            .env("CXL_LAB_STATE", &scratch.state)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown: Vec<String> = case.arguments.iter().map(|argument| argument.to_string_lossy().chars().take(60).collect()).collect();
        let missing: Vec<&String> = case.says.iter().filter(|text| !stderr.contains(text.as_str())).collect();
        if output.status.code() != Some(case.code) || !missing.is_empty() || stderr.contains("panicked") {
            failures.push(format!("xtask {}: exit {:?} (wanted {}), missing {missing:?} in:\n{stderr}", shown.join(" "), output.status.code(), case.code));
        } else {
            eprintln!("ok: xtask {} -> {}: {}", shown.join(" "), case.code, stderr.lines().next().unwrap_or(""));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lab_commands_refuse_malformed_arguments_with_a_message_and_no_panic() {
    let scratch = Scratch::new("input");
    let missing = scratch.root.join("missing-file");
    let missing = missing.to_str().unwrap();
    let dir = scratch.root.to_str().unwrap().to_owned();
    let nested = "[".repeat(10_000);
    let huge = format!("{{\"data\":\"{}\"}}", "x".repeat(100_000));
    let no_lab = "no lab `default` is running";
    let mut cases = vec![
        // `lab qmp`: the arguments must be one JSON object; the command a QMP name.
        case(&["lab", "qmp", "query-status", "not json"], 1, &["arguments are not JSON"]),
        case(&["lab", "qmp", "query-status", "[1]"], 1, &["arguments must be a JSON object, got [1]"]),
        case(&["lab", "qmp", "query-status", "\"text\""], 1, &["arguments must be a JSON object"]),
        case(&["lab", "qmp", "query-status", "{\"a\":"], 1, &["arguments are not JSON: EOF"]),
        case(&["lab", "qmp", "query-status", &nested], 1, &["arguments are not JSON: recursion limit exceeded"]),
        case(&["lab", "qmp", "query-status", &huge], 1, &[no_lab]),
        case(&["lab", "qmp", ""], 1, &["`` is not a QMP command name"]),
        case(&["lab", "qmp", "query status"], 1, &["`query status` is not a QMP command name"]),
        case(&["lab", "qmp", "query-status"], 1, &[no_lab]),
        case(&["lab", "qmp"], 2, &["required arguments were not provided"]),
        // `lab cp`: one side `guest:/absolute`, the other a local file.
        case(&["lab", "cp", missing, "guest:/tmp/x"], 1, &[&format!("`{missing}`: No such file or directory")]),
        case(&["lab", "cp", &dir, "guest:/tmp/x"], 1, &[&format!("`{dir}` is not a regular file")]),
        case(&["lab", "cp", "guest:", "/tmp/x"], 1, &["`guest:`: the guest path must be absolute"]),
        case(&["lab", "cp", "guest:tmp/x", "/tmp/x"], 1, &["`guest:tmp/x`: the guest path must be absolute"]),
        case(&["lab", "cp", "/etc/hostname", "guest:"], 1, &["`guest:`: the guest path must be absolute"]),
        case(&["lab", "cp", "/etc/hostname", "/tmp/x"], 1, &["neither `/etc/hostname` nor `/tmp/x` is in the guest"]),
        case(&["lab", "cp", "guest:/a", "guest:/b"], 1, &["are both in the guest"]),
        case(&["lab", "cp", "guest:/etc/hostname", &format!("{missing}/x")], 1, &[&format!("{missing} is not a directory")]),
        case(&["lab", "cp", "/etc/hostname", "guest:/tmp/x"], 1, &[no_lab]),
        case(&["lab", "cp", "/etc/hostname"], 2, &["required arguments were not provided"]),
        // Every lab command without a lab.
        case(&["lab", "exec", "--", "true"], 1, &[no_lab]),
        case(&["lab", "console"], 1, &[no_lab]),
        case(&["lab", "down"], 1, &[no_lab]),
        case(&["lab", "ssh"], 1, &[no_lab]),
        case(&["lab", "switch", "seed"], 1, &[no_lab]),
        case(&["lab", "status"], 3, &[]),
        case(&["lab", "exec", "--timeout", "soon", "--", "true"], 2, &["invalid value 'soon' for '--timeout <TIMEOUT>'"]),
        // A lab name is a directory name, never a path.
        case(&["lab", "--lab", "../../etc", "status"], 2, &["invalid value '../../etc' for '--lab <LAB>'"]),
        case(&["lab", "--lab", "", "down"], 2, &["invalid value '' for '--lab <LAB>'"]),
        case(&["lab", "up", "--profile", missing], 1, &[&format!("no profile `{missing}`")]),
    ];
    // Arguments that are not UTF-8 never reach a command.
    for arguments in [vec!["lab", "qmp", "query-status"], vec!["lab", "cp", "guest:/tmp/x"]] {
        let mut arguments: Vec<OsString> = arguments.into_iter().map(OsString::from).collect();
        arguments.push(OsString::from_vec(vec![b'{', 0xff, 0xfe, b'}']));
        cases.push(Case { arguments, code: 2, says: vec!["invalid UTF-8".to_owned()] });
    }
    run_table(&scratch, &cases);
}

#[test]
fn model_commands_refuse_malformed_input_naming_file_line_and_field() {
    let scratch = Scratch::new("model-input");
    let bad = scratch.root.join("bad.yaml");
    std::fs::write(&bad, "requesters:\n  - { name: a }\nbuffers:\n  - { name: b, size: 4K }\ngrants:\n  - { requester: a, buffer: x, rights: rw }\n").unwrap();
    let bad = bad.to_str().unwrap();
    let cases = [
        case(&["model", "decode", "dcd", "--hpa", "0"], 1, &["dcd.yaml:32:14: fixed_windows[0]: Linux cannot build a region over this window"]),
        case(&["model", "decode", "interleave", "--hpa", "zz"], 2, &["`zz` is not a size"]),
        case(&["model", "decode", "interleave", "--hpa", "8G"], 1, &["HPA 0x200000000 is outside the region [0x0, 0x40000000)"]),
        case(&["model", "decode", "interleave", "--window", "3", "--hpa", "0"], 1, &["fixed_windows: host `host0` has 1 fixed window(s): no window 3"]),
        case(&["model", "decode", "interleave", "--dpa", "nope"], 2, &["`nope` is not DEVICE:ADDR"]),
        case(&["model", "decode", "interleave", "--dpa", "999:0"], 1, &["no member device `999`"]),
        case(&["model", "decode", "interleave"], 2, &["required arguments were not provided"]),
        case(&["model", "eval", "nosuch"], 1, &["no scenario `nosuch`"]),
        case(&["model", "eval", bad], 1, &["bad.yaml:6:29: grants[0].buffer: no buffer `x`"]),
    ];
    run_table(&scratch, &cases);
}

#[test]
fn malformed_recipes_and_locks_are_errors_naming_file_line_and_field() {
    let scratch = Scratch::new("recipe");
    let recipe_path = scratch.images.join("distro.yaml");
    let lock_path = scratch.images.join("distro.lock");
    let good = std::fs::read_to_string(&recipe_path).unwrap();
    let good_lock = std::fs::read_to_string(&lock_path).unwrap();
    let file = recipe_path.display().to_string();
    // The 1-based line of the first line of `good` starting with `prefix`.
    let line_of = |prefix: &str| good.lines().position(|line| line.starts_with(prefix)).unwrap() + 1;
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "the recipe has no `{from}`");
        good.replacen(from, to, 1).into_bytes()
    };
    let headroom = line_of("  headroom_mib:");
    let busybox = line_of("    - debian: { package: busybox-static");
    let rows: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        ("bad YAML", b"stack: [unclosed\n".to_vec(), vec![format!("{file}:1:")]),
        ("unknown field", edit("  headroom_mib:", "  sutie: sid\n  headroom_mib:"), vec![format!("{file}:{headroom}:3: rootfs.sutie: unknown field `sutie`")]),
        ("wrong type", edit("  headroom_mib: 2048", "  headroom_mib: lots"), vec![format!("{file}:{headroom}:17: rootfs.headroom_mib: invalid u64")]),
        ("no source", edit("  busybox:\n    - debian: { package: busybox-static, suite: trixie }", "  busybox: []"), vec![format!("{file}: initramfs.busybox: lists no source")]),
        ("a key twice", edit("  headroom_mib:", "  hostname: other\n  headroom_mib:"), vec![format!("{file}:{headroom}:3: rootfs.hostname: duplicate mapping key: hostname\n")]),
        ("a missing field", edit("stack: distro\n", ""), vec![format!("{file}:"), ": missing field `stack`".to_owned()]),
        ("unknown source kind", edit("- debian: { package: busybox-static", "- svn: { package: busybox-static"), vec![format!("{file}:{busybox}:7: initramfs.busybox.svn: unknown variant `svn`")]),
        ("no suite", edit("{ package: busybox-static, suite: trixie }", "{ package: busybox-static }"), vec![format!("{file}:{busybox}:17: initramfs.busybox.debian: missing field `suite`")]),
        ("a suite that is an option", edit("rootfs:\n  suite: trixie\n", "rootfs:\n  suite: --variant=buildd\n"), vec![format!("{file}: rootfs.suite: a suite name")]),
        ("a mirror that is no URL", edit("  mirror: http://deb.debian.org/debian", "  mirror: deb.debian.org"), vec![format!("{file}: archive.mirror: an archive URL")]),
        ("an image past a u64", edit("  headroom_mib: 2048", "  headroom_mib: 18446744073709551615"), vec![format!("{file}: rootfs.headroom_mib: at most 1048576")]),
        ("empty", Vec::new(), vec![format!("{file}:1:1: the recipe is empty")]),
        ("deeply nested", "[".repeat(100_000).into_bytes(), vec![format!("{file}:1:"), "recursion limit exceeded".to_owned()]),
        ("not UTF-8", b"stack: distro\n\xff\xfe\n".to_vec(), vec![format!("cannot read recipe {file}: stream did not contain valid UTF-8")]),
    ];
    for (what, text, says) in rows {
        eprintln!("recipe: {what}");
        std::fs::write(&recipe_path, &text).unwrap();
        let says: Vec<&str> = says.iter().map(String::as_str).collect();
        // `cache ls` reads the recipe and nothing else; `build` reads it before it does anything.
        run_table(&scratch, &[case(&["cache", "ls"], 1, &says), case(&["build", "kernel", "--locked"], 1, &says)]);
    }

    std::fs::remove_file(&recipe_path).unwrap();
    run_table(&scratch, &[case(&["cache", "ls"], 1, &[&format!("cannot read recipe {file}: No such file or directory")])]);
    let stderr = scratch.xtask(&["cache", "ls"]).stderr;
    assert_eq!(String::from_utf8_lossy(&stderr).matches("No such file or directory").count(), 1, "said once");

    std::fs::write(&recipe_path, &good).unwrap();
    let lock_file = lock_path.display().to_string();
    for (what, text, says) in [
        ("garbage", "garbage\n".to_owned(), format!("cannot read lock file {lock_file}: expected value at line 1 column 1")),
        ("an older format", good_lock.replacen("\"format\": 1", "\"format\": 0", 1), format!("cannot read lock file {lock_file}: format 0 is not 1")),
        (
            "a package that leaves the downloads directory",
            good_lock.replacen("\"package\": \"busybox-static\"", "\"package\": \"../../busybox\"", 1),
            format!("cannot read lock file {lock_file}: busybox: ../../busybox: not a Debian package name"),
        ),
        (
            "a pool path that leaves the mirror",
            good_lock.replacen("\"filename\": \"pool/main/b/", "\"filename\": \"../../b/", 1),
            "filename `../../b/".to_owned(),
        ),
    ] {
        eprintln!("lock: {what}");
        std::fs::write(&lock_path, text).unwrap();
        run_table(&scratch, &[case(&["cache", "ls"], 1, &[&says]), case(&["build", "kernel", "--locked"], 1, &[&says])]);
    }
}

use super::eval::evaluate;
use super::*;

const TWO_VMS: &str = "\
requesters:
  - { name: vm, count: 2, port: host0 }
buffers:
  - { name: page, size: 4K, count: 2 }
grants:
  - { requester: vm0, buffer: page0, rights: rw, delegate: true }
  - { requester: vm1, buffer: page1, rights: r }
";

fn errors(source: &str) -> Vec<String> {
    match parse_scenario("s.yaml", source, "s") {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn groups_expand_and_buffers_are_placed_on_pages() {
    let scenario = parse_scenario("s.yaml", TWO_VMS, "s").unwrap();
    let names: Vec<&str> = scenario.requesters.iter().map(|requester| requester.name.as_str()).collect();
    assert_eq!(names, ["vm0", "vm1"]);
    assert!(scenario.requesters.iter().all(|requester| requester.port == "host0"));
    assert_eq!(scenario.buffers[1].base, 4096);
    assert_eq!(scenario.grants_per_requester(), 1);
}

#[test]
fn errors_name_file_line_column_and_field() {
    let unknown = format!("{TWO_VMS}trace:\n  - {{ requester: vm9, buffer: page0, length: 8, access: read }}\n");
    assert_eq!(errors(&unknown), ["s.yaml:9:18: trace[0].requester: no requester `vm9`"]);
    let bad_rights = TWO_VMS.replace("rights: r }", "rights: x }");
    assert_eq!(errors(&bad_rights), ["s.yaml:7:46: grants[1].rights: rights `x` are not r, w or rw"]);
    let syntax = errors("requesters: [\n");
    assert!(syntax[0].starts_with("s.yaml:") && syntax[0].contains("(yaml)"), "{syntax:?}");
}

#[test]
fn only_a_holder_allowed_to_may_delegate_and_never_more_than_it_holds() {
    let from_reader = format!("{TWO_VMS}delegations:\n  - {{ id: d, from: vm1, to: vm0, buffer: page1, rights: r }}\n");
    assert_eq!(errors(&from_reader), ["s.yaml:9:20: delegations[0].from: `vm1` may not hand on `page1` with these rights"]);
    let widening = format!("{TWO_VMS}delegations:\n  - {{ id: d, from: vm0, to: vm1, buffer: page1, rights: rw }}\n");
    assert_eq!(errors(&widening), ["s.yaml:9:20: delegations[0].from: `vm0` holds no grant of `page1`"]);
}

#[test]
fn a_revocation_in_the_trace_changes_what_the_policy_permits() {
    let source = format!(
        "{TWO_VMS}delegations:\n  - {{ id: d, from: vm0, to: vm1, buffer: page0, rights: r }}\ntrace:\n  - {{ requester: vm1, buffer: page0, length: 8, access: read }}\n  - revoke: d\n  - {{ requester: vm1, buffer: page0, length: 8, access: read }}\n"
    );
    let scenario = parse_scenario("s.yaml", &source, "s").unwrap();
    let outcomes = evaluate(&scenario);
    let capabilities = outcomes.iter().find(|outcome| outcome.mechanism == "capabilities").unwrap();
    assert!(capabilities.expresses_policy, "{capabilities:?}");
    let host = outcomes.iter().find(|outcome| outcome.mechanism == "host decode").unwrap();
    // Both VMs share host0: after the revocation vm1 still reaches page0 through vm0's decoder.
    assert_eq!((host.forbidden_allowed, host.permitted_denied), (1, 0));
}

#[test]
fn a_group_where_one_is_meant_is_an_error_at_it() {
    let delegation = format!("{TWO_VMS}delegations:\n  - {{ id: d, from: vm, to: vm1, buffer: page0, rights: r }}\n");
    assert_eq!(errors(&delegation), ["s.yaml:9:20: delegations[0].from: `vm` is a group of 2; name one of them"]);
    let access = format!("{TWO_VMS}trace:\n  - {{ requester: vm0, buffer: page, length: 8, access: read }}\n");
    assert_eq!(errors(&access), ["s.yaml:9:31: trace[0].buffer: `page` is a group of 2; name one of them"]);
    let twice = TWO_VMS.replace("buffers:\n", "  - { name: vm }\nbuffers:\n");
    assert_eq!(errors(&twice), ["s.yaml:3:13: requesters[1].name: `vm` is defined twice"]);
}

#[test]
fn addresses_beyond_64_bits_are_errors_not_overflows() {
    let huge = TWO_VMS.replace("size: 4K, count: 2", "size: 16000000T, count: 2");
    assert_eq!(errors(&huge), ["s.yaml:4:25: buffers[0].size: the buffers do not fit in a 64-bit address space"]);
    let offset = format!("{TWO_VMS}trace:\n  - {{ requester: vm0, buffer: page1, offset: 18446744073709551615, length: 8, access: read }}\n");
    assert_eq!(errors(&offset), ["s.yaml:9:31: trace[0].offset: offset 18446744073709551615 from `page1` is beyond a 64-bit address"]);
}

#[test]
fn an_incomplete_access_is_reported_at_its_own_line() {
    let incomplete = format!("{TWO_VMS}trace:\n  - {{ requester: vm0, buffer: page0, length: 8, access: read }}\n  - {{ buffer: page0, length: 8 }}\n");
    let found = errors(&incomplete);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("s.yaml:10:"), "{found:?}");
}

//! Every shipped scenario through every protection mechanism: capabilities express each policy
//! exactly, the CXL mechanisms do not, and the figures (timings zeroed) are snapshots. Review
//! changes with `cargo insta review`.

use std::path::Path;

use cxl_lab_core::model::scenario::eval::evaluate;
use cxl_lab_core::scenario;
use cxl_lab_core::Layout;

const SHIPPED: [&str; 4] = ["accelerators", "pairwise", "revocation", "tenants"];

#[test]
fn every_shipped_scenario_is_listed() {
    let paths = Layout::for_workspace(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    assert_eq!(scenario::list(&paths).unwrap(), SHIPPED);
}

#[test]
fn capabilities_express_every_shipped_policy_and_cxl_mechanisms_do_not() {
    let paths = Layout::for_workspace(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    for name in SHIPPED {
        let loaded = scenario::load(&paths, name).unwrap();
        let mut outcomes = evaluate(&loaded.scenario);
        for outcome in &mut outcomes {
            assert_eq!(outcome.expresses_policy, outcome.mechanism == "capabilities", "{name}: {outcome:?}");
            outcome.check_nanos = 0;
        }
        insta::assert_json_snapshot!(format!("eval_{name}"), outcomes);
    }
}

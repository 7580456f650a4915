//! Conformance tests: one test per attack on the capability layer, named after the attack
//!
//! Each test builds the attack the way an adversary holding a genuine token could (attenuation
//! needs no secret, so adversaries can run MAC steps of their own) and asserts the exact error
//! the device answers with. The threat list in `docs/capability-format.md` maps every attack to
//! its test here.

mod bounds;
mod chain;
mod encoding;
mod fixtures;
mod revocation;

//! bottle's integration tests: one binary (it links wasmtime once), one module per topic.

mod admission;
mod approvals;
mod bundle_init;
mod checklist;
mod conflicts;
mod docker_e2e;
mod dry_run;
mod fleet_e2e;
mod forge_e2e;
mod hop_e2e;
mod kubernetes;
mod native_drivers;
mod plugin_host;
mod smolmachines;
mod support;
mod workdir_e2e;

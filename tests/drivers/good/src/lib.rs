//! A well-formed native driver: it answers `info`, refuses `probe` the way a driver on a host
//! that cannot run its engine does, and panics on `up` of slug `panic`.

use bottle_driver_sdk::{Driver, Request, export_driver};

struct Good;

impl Driver for Good {
    fn new() -> Self {
        Good
    }

    fn call(&self, request: Request) -> Result<serde_json::Value, String> {
        match request {
            Request::Info => Ok(serde_json::json!({"name": "good", "version": "0.1.0"})),
            Request::Probe => Err("this host cannot run good machines: no engine here".into()),
            Request::Up { slug, .. } if slug == "panic" => panic!("asked to panic"),
            Request::Up { slug, .. } => Ok(serde_json::json!({"up": slug})),
            Request::Down { .. } | Request::List { .. } => Ok(serde_json::json!([])),
            Request::Exec { .. } | Request::Logs { .. } => Err("not this driver".into()),
        }
    }
}

export_driver!(Good);

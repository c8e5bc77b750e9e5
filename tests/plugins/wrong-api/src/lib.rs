//! A plugin built against a future, incompatible API version (9.0.0).
#![allow(missing_docs, reason = "test plugin")]
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "only the wasm build exports it")
)]

wit_bindgen::generate!({
    inline: "
        package bottle:plugin@9.0.0;
        interface sidecar {
            info: func() -> string;
        }
        world future-sidecar {
            export sidecar;
        }
    ",
    world: "future-sidecar",
});

struct Future;

impl exports::bottle::plugin::sidecar::Guest for Future {
    fn info() -> String {
        "from the future".into()
    }
}

#[cfg(target_arch = "wasm32")]
export!(Future);

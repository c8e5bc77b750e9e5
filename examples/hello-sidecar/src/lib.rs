//! `hello`: an example sidecar plugin.
//!
//! It tells the agent a greeting through an env var and runs a tiny daemon that serves it on
//! TCP port 7777 (`nc hello 7777` from the agent): inside the shared sidecar bundle by default,
//! or as a service of its own with `own_service: true`. Build it with `cargo build --target wasm32-wasip2 --release` and load it
//! with `bottle run AGENT --plugin-dir target/wasm32-wasip2/release`.

use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;

/// `plugins.hello` in the manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// What to say.
    pub greeting: String,
    /// Run as its own service instead of joining the bundle.
    pub own_service: bool,
    /// The image of the own service.
    pub image: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            greeting: "hello from a plugin".into(),
            own_service: false,
            image: "bottle-base:latest".into(),
        }
    }
}

/// The port the greeting is served on (declared: the bundle listens on no other).
pub const PORT: u16 = 7777;

/// The plugin.
pub struct Hello;

impl Sidecar for Hello {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "hello".into(),
            kind: PluginKind::Sidecar,
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "example sidecar: greets the agent".into(),
        }
    }

    fn prepare(bottle: &Bottle, settings: &Settings) -> Result<Plan, PluginError> {
        bottle_plugin_sdk::log::info(&format!(
            "greeting {} with {:?}",
            bottle.agent.name, settings.greeting
        ));
        Ok(Plan::default())
    }

    fn render(_ctx: &RenderContext, settings: &Settings) -> Result<Fragment, PluginError> {
        // Daemons run by absolute path (the bundle's init does no PATH lookup).
        let command = vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "echo \"$HELLO_GREETING\"; while :; do printf '%s\\n' \"$HELLO_GREETING\" | nc -l -p {PORT} -q 1; done"
            ),
        ];
        let env = vec![kv("HELLO_GREETING", settings.greeting.clone())];
        let mut agent = Patch::agent();
        agent
            .env
            .push(kv("HELLO_GREETING", settings.greeting.clone()));
        let mut fragment = Fragment {
            patches: vec![agent],
            ..Fragment::default()
        };
        if settings.own_service {
            fragment.services.push(Service {
                name: "hello".into(),
                image: settings.image.clone(),
                command,
                env,
                ..Service::default()
            });
        } else {
            fragment.daemons.push(Daemon {
                name: "hello".into(),
                command,
                env,
                ports: vec![PORT],
                ..Daemon::default()
            });
        }
        Ok(fragment)
    }
}

bottle_plugin_sdk::export!(sidecar Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_plugin_sdk::testing;

    fn render(settings: &str) -> Result<Fragment, PluginError> {
        let mut b = testing::bottle();
        b.settings = settings.into();
        bottle_plugin_sdk::plugin::render::<Hello>(testing::render_context(b))
    }

    #[test]
    fn joins_the_bundle_by_default() {
        let f = render("{}").unwrap();
        assert_eq!(f.daemons[0].name, "hello");
        assert!(f.services.is_empty());
        assert_eq!(f.patches[0].env[0].value, "hello from a plugin");
    }

    #[test]
    fn runs_its_own_service_when_asked() {
        let f = render(r#"{"own_service": true, "greeting": "hi"}"#).unwrap();
        assert!(f.daemons.is_empty());
        assert_eq!(f.services[0].name, "hello");
    }

    #[test]
    fn a_typo_in_the_settings_names_the_field() {
        let err = render(r#"{"greting": "hi"}"#).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidSettings(m) if m.contains("greting")),
            "{err:?}"
        );
    }

    #[test]
    fn logs_through_the_facade() {
        Hello::prepare(&testing::bottle(), &Settings::default()).unwrap();
        let logs = bottle_plugin_sdk::log::take();
        assert!(logs[0].1.contains("greeting demo"), "{logs:?}");
    }
}

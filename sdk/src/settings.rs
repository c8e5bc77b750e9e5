//! A plugin's own settings table, handed over as JSON.

use crate::types::PluginError;
use serde::de::DeserializeOwned;

/// Parse this plugin's settings table into `T`.
///
/// An empty or `{}` table gives `T::default()`. Give `T` `#[serde(deny_unknown_fields)]` so a
/// typo is an error; the message names the field, and the host adds the manifest file.
pub fn parse_settings<T: DeserializeOwned + Default>(json: &str) -> Result<T, PluginError> {
    if json.trim().is_empty() || json.trim() == "{}" {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| PluginError::InvalidSettings(e.to_string()))
}

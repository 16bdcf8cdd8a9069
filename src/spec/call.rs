//! Call policies as the config names them.

/// What a press during a call does (`call.press_during_call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PressDuringCall {
    /// Report it (event `busy`), nothing else.
    #[default]
    Ignore,
    /// Report it and send the owner the link again.
    Renotify,
}

//! The run's top-level keys: `duration`, `semantics` and `[settings]`.

use super::error::{Ctx, ScenarioError};
use holdfast_actors::core::settings::{Semantics, Settings};
use toml::Spanned;

/// `duration`: how long the run lasts.
pub(super) fn duration(cx: &Ctx, duration: &Spanned<String>) -> Result<u64, ScenarioError> {
    let duration_ms = cx.dur(duration, "duration")?;
    if duration_ms == 0 {
        return Err(cx.err(&duration.span(), "duration", "must be longer than 0s"));
    }
    Ok(duration_ms)
}

/// `[settings]`, with a top-level `semantics` folded in.
pub(super) fn settings(
    cx: &Ctx,
    raw: &Settings,
    semantics: Option<&Spanned<Semantics>>,
) -> Result<Settings, ScenarioError> {
    let src = cx.src;
    let mut settings = raw.clone();
    if let Some(sem) = semantics {
        if settings.semantics != Semantics::default() && settings.semantics != *sem.get_ref() {
            return Err(cx.err(
                &sem.span(),
                "semantics",
                "contradicts `settings.semantics`; set it in one place",
            ));
        }
        settings.semantics = *sem.get_ref();
    }
    if let Err((key, msg)) = settings.validate() {
        // Point at the line that sets it, if the file sets it.
        let at = src
            .find(&format!("\n{key}"))
            .map(|i| i + 1..i + 2)
            .unwrap_or(0..0);
        return Err(cx.err(&at, &format!("settings.{key}"), msg));
    }
    Ok(settings)
}

//! Checkers for the kinds this module owns. (Placeholder.)

use super::common::{Case, Verdict};

/// Checks `case` if its kind belongs here; `None` otherwise.
pub fn check(_case: &Case) -> Option<Verdict> {
    None
}

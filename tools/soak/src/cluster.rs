//! Several nodes: placeholder.
use crate::Opts;
pub fn run(_o: &Opts) -> Result<bool, String> {
    Err("not yet".into())
}

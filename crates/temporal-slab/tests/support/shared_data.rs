//! Where the real-input tests find the shared data set.

use std::path::PathBuf;

/// `$SHARED_DATA_DIR`, else `../shared/data` beside the workspace root. `None` (with a message)
/// when neither exists; a panic instead when `REQUIRE_SHARED_DATA=1`.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("SHARED_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("REQUIRE_SHARED_DATA=1 but {} does not exist", dir.display());
    }
    eprintln!("skipped: shared data not found at {}", dir.display());
    None
}

//! Resident set size from `/proc/self/statm` (Linux), read without allocating.

use std::io::Read;

/// The process's resident set size in bytes (second field of `/proc/self/statm` times the page
/// size), or `None` where the file is missing or unreadable.
pub fn process_rss_bytes() -> Option<u64> {
    let mut file = std::fs::File::open("/proc/self/statm").ok()?;
    let mut buf = [0u8; 128];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    let resident: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(resident * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_readable_and_plausible() {
        let rss = super::process_rss_bytes().expect("linux has /proc/self/statm");
        assert!(rss > 64 * 1024 && rss < 64 << 30, "rss {rss}");
    }
}

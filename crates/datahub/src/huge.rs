//! Huge pages for a block's mapping: what was asked for ([`HugePages`]), what the kernel allows,
//! and what was obtained ([`Backing`], recorded in the header).
//!
//! # Routes, and which one the named `/dev/shm` mode can take
//! - `MAP_HUGETLB` on a `/dev/shm` descriptor always fails (`EINVAL`): it is for anonymous and
//!   hugetlbfs mappings only, so this module never tries it.
//! - `memfd_create(MFD_HUGETLB)` needs a huge-page pool and an unnamed block: the secure-attach
//!   mode ([`crate::Producer::create_secure`], `secure/server.rs`) tries it first and records
//!   [`Backing::Hugetlb`]. The named mode never records it.
//! - Transparent huge pages on shmem: `madvise(MADV_HUGEPAGE)` on the mapping. Whether the
//!   kernel honours it for a file of a tmpfs mount (`/dev/shm` is one) depends on that mount's
//!   `huge=` option (`always`, `within_size` or `advise`; absent means `never`), except that
//!   `/sys/kernel/mm/transparent_hugepage/shmem_enabled` set to `deny` turns it off on every
//!   mount and `force` turns it on. (The other `shmem_enabled` values govern the kernel's
//!   internal mount: memfds, SysV shm, shared anonymous memory, not `/dev/shm`.) This is the
//!   route [`HugePages::Try`] takes.
//!
//! # What "obtained" means
//! `madvise` succeeding is a request, not a guarantee: the kernel may still hand out 4 KiB pages
//! (no free 2 MiB page, an unaligned mapping, pages already allocated small by the creation-time
//! `fallocate` under `huge=advise`). After the advice the producer touches one byte per huge page
//! and reads its own mapping's `ShmemPmdMapped` / `FilePmdMapped` in `/proc/self/smaps`: non-zero
//! is [`Backing::Thp`] (verified), zero or unreadable is [`Backing::ThpRequested`] (advised, not
//! seen). [`HugePages::Require`] accepts only a verified [`Backing::Thp`].
//!
//! When huge pages are attempted the segment file is sized up to a multiple of the PMD size
//! (`hpage_pmd_size`, 2 MiB on x86-64), so the last huge page is whole; the header's
//! `total_size` (the layout) does not change, and openers map the whole file.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::Error;

/// Environment variable naming a directory that stands in for
/// `/sys/kernel/mm/transparent_hugepage` (its `shmem_enabled` and `hpage_pmd_size` files): for
/// tests. Read at each [`crate::Producer::create`].
pub const THP_SYSFS_ENV: &str = "DATAHUB_THP_SYSFS_DIR";

/// The kernel's directory of transparent-huge-page settings.
pub const THP_SYSFS_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// Longest sysfs or mountinfo file read (bytes); longer content is refused as damage.
const MAX_SYSFS_READ: u64 = 4096;
const MAX_MOUNTINFO_READ: u64 = 1 << 20;

/// Whether a producer asks for huge pages for its block ([`crate::Config::huge_pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HugePages {
    /// 4 KiB pages; nothing is asked of the kernel (the default).
    #[default]
    Off,
    /// Transparent huge pages where the kernel allows them for the block's file system, else
    /// 4 KiB pages; [`crate::Producer::huge_pages`] says which and why.
    Try,
    /// Huge pages or [`Error::HugePagesUnavailable`]: creation fails unless huge pages are
    /// allowed, advised and seen mapped.
    Require,
}

/// The pages a block's memory is backed by, as recorded by its creator in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Backing {
    /// Not recorded: a block made by a format 1.0 producer (the field is 0), or a value this
    /// build does not know.
    Unknown,
    /// 4 KiB pages (huge pages off, or not available).
    Small,
    /// `madvise(MADV_HUGEPAGE)` succeeded but no huge mapping was seen after touching the block.
    ThpRequested,
    /// Transparent huge pages, seen mapped (`ShmemPmdMapped`/`FilePmdMapped` > 0).
    Thp,
    /// A hugetlb page pool (`memfd_create(MFD_HUGETLB)`): secure-attach blocks only
    /// ([`crate::Producer::create_secure`]); the named `/dev/shm` mode never records it.
    Hugetlb,
}

impl Backing {
    /// The header's code: 0 unknown, 1 small, 2 thp_requested, 3 thp, 4 hugetlb.
    pub fn code(self) -> u32 {
        match self {
            Backing::Unknown => 0,
            Backing::Small => 1,
            Backing::ThpRequested => 2,
            Backing::Thp => 3,
            Backing::Hugetlb => 4,
        }
    }

    /// The backing for a header code (unknown codes read as [`Backing::Unknown`]).
    pub fn from_code(code: u32) -> Backing {
        match code {
            1 => Backing::Small,
            2 => Backing::ThpRequested,
            3 => Backing::Thp,
            4 => Backing::Hugetlb,
            _ => Backing::Unknown,
        }
    }

    /// The name used by `inspect` and the metrics: `unknown`, `small`, `thp_requested`, `thp`,
    /// `hugetlb`.
    pub fn name(self) -> &'static str {
        match self {
            Backing::Unknown => "unknown",
            Backing::Small => "small",
            Backing::ThpRequested => "thp_requested",
            Backing::Thp => "thp",
            Backing::Hugetlb => "hugetlb",
        }
    }
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a producer asked for and what it got ([`crate::Producer::huge_pages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HugePageOutcome {
    /// The request.
    pub requested: HugePages,
    /// What the block is backed by (also in its header).
    pub backing: Backing,
    /// Why the backing is what it is, in one line (for example "shmem_enabled is [never] and
    /// /dev/shm is mounted without huge=").
    pub reason: String,
}

/// One value of `shmem_enabled` (the bracketed one is in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShmemEnabled {
    /// `always`.
    Always,
    /// `within_size`.
    WithinSize,
    /// `advise`.
    Advise,
    /// `never`.
    Never,
    /// `deny`: huge pages off on every shmem/tmpfs mount.
    Deny,
    /// `force`: huge pages on for every shmem/tmpfs mount.
    Force,
}

impl ShmemEnabled {
    fn from_word(w: &str) -> Option<ShmemEnabled> {
        Some(match w {
            "always" => ShmemEnabled::Always,
            "within_size" => ShmemEnabled::WithinSize,
            "advise" => ShmemEnabled::Advise,
            "never" => ShmemEnabled::Never,
            "deny" => ShmemEnabled::Deny,
            "force" => ShmemEnabled::Force,
            _ => return None,
        })
    }
}

/// Parses the content of `shmem_enabled` (for example `always within_size advise [never] deny
/// force`): the one bracketed word, which must be a known value. `None` for anything else: no
/// bracket, two brackets, an unknown word, empty or longer than 4096 bytes.
pub fn parse_shmem_enabled(text: &str) -> Option<ShmemEnabled> {
    if text.len() as u64 > MAX_SYSFS_READ {
        return None;
    }
    let mut chosen = None;
    for w in text.split_ascii_whitespace() {
        if let Some(inner) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            if chosen.is_some() {
                return None;
            }
            chosen = Some(ShmemEnabled::from_word(inner)?);
        } else if ShmemEnabled::from_word(w).is_none() {
            return None;
        }
    }
    chosen
}

/// The `huge=` option of the tmpfs mount holding `dir`, from `/proc/self/mountinfo` text:
/// `Ok(Some(value))`, `Ok(None)` for a tmpfs mount without the option (`never`), `Err(why)` when
/// `dir` is not on tmpfs or the text names no mount for it.
pub(crate) fn tmpfs_huge_option(mountinfo: &str, dir: &Path) -> Result<Option<String>, String> {
    // Fields: id parent major:minor root mount_point options [optional...] - fstype source super
    let mut best: Option<(usize, &str, &str)> = None;
    for line in mountinfo.lines() {
        let mut fields = line.split(' ');
        let Some(mount_point) = fields.nth(4) else {
            continue;
        };
        let Some((_, tail)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = tail.split(' ');
        let (Some(fstype), Some(_source), Some(sup)) = (tail.next(), tail.next(), tail.next())
        else {
            continue;
        };
        let mp = Path::new(mount_point);
        if dir.starts_with(mp) {
            let depth = mp.components().count();
            // Later lines with the same depth are mounts stacked on top: they win.
            if best.is_none_or(|(d, _, _)| depth >= d) {
                best = Some((depth, fstype, sup));
            }
        }
    }
    let Some((_, fstype, sup)) = best else {
        return Err(format!("no mount found for {}", dir.display()));
    };
    if fstype != "tmpfs" {
        return Err(format!(
            "{} is on {}, not tmpfs",
            dir.display(),
            crate::error::clip(fstype)
        ));
    }
    Ok(sup
        .split(',')
        .find_map(|o| o.strip_prefix("huge="))
        .map(crate::error::clip))
}

/// What the kernel settings allow for a block file in `dir`: `Ok(pmd_size)` when transparent
/// huge pages may back it, `Err(why)` (one line) when they cannot.
pub(crate) fn thp_allowed(
    shmem_enabled: Option<&str>,
    pmd_size: Option<&str>,
    mountinfo: Option<&str>,
    dir: &Path,
) -> Result<u64, String> {
    let Some(text) = shmem_enabled else {
        return Err(
            "shmem_enabled is unreadable (no transparent huge pages in this kernel?)".into(),
        );
    };
    let Some(setting) = parse_shmem_enabled(text) else {
        return Err(format!(
            "shmem_enabled is unparsable: {:?}",
            crate::error::clip(text.trim())
        ));
    };
    let pmd = pmd_size
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&p| p.is_power_of_two() && (4096..=1 << 30).contains(&p))
        .ok_or_else(|| "hpage_pmd_size is unreadable or not a power of two".to_owned())?;
    let shown = format!("shmem_enabled is [{}]", word(setting));
    match setting {
        ShmemEnabled::Deny => return Err(shown),
        ShmemEnabled::Force => return Ok(pmd),
        _ => {}
    }
    let Some(mountinfo) = mountinfo else {
        return Err(format!("{shown} and /proc/self/mountinfo is unreadable"));
    };
    match tmpfs_huge_option(mountinfo, dir) {
        Err(why) => Err(format!("{shown} and {why}")),
        Ok(None) => Err(format!(
            "{shown} and {} is mounted without huge=",
            dir.display()
        )),
        Ok(Some(v)) if matches!(v.as_str(), "always" | "within_size" | "advise") => Ok(pmd),
        Ok(Some(v)) => Err(format!("{shown} and {} is mounted huge={v}", dir.display())),
    }
}

fn word(s: ShmemEnabled) -> &'static str {
    match s {
        ShmemEnabled::Always => "always",
        ShmemEnabled::WithinSize => "within_size",
        ShmemEnabled::Advise => "advise",
        ShmemEnabled::Never => "never",
        ShmemEnabled::Deny => "deny",
        ShmemEnabled::Force => "force",
    }
}

/// Reads at most `limit` bytes of `path` as text (`None` if it cannot be opened, is not a
/// regular file or sysfs/proc file, is longer, or is not UTF-8).
fn read_bounded(path: &Path, limit: u64) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    f.take(limit + 1).read_to_string(&mut s).ok()?;
    (s.len() as u64 <= limit).then_some(s)
}

/// The directory standing for `/sys/kernel/mm/transparent_hugepage` ([`THP_SYSFS_ENV`]).
fn sysfs_dir() -> PathBuf {
    std::env::var_os(THP_SYSFS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(THP_SYSFS_DIR))
}

/// The plan for a new block: the PMD size to round the segment to and attempt THP with, or
/// `None` (4 KiB pages) with the reason. [`HugePages::Require`] that cannot be met fails here,
/// before anything is created.
pub(crate) fn plan(mode: HugePages, dir: &Path) -> Result<(Option<u64>, String), Error> {
    if mode == HugePages::Off {
        return Ok((None, "huge pages off".into()));
    }
    let sys = sysfs_dir();
    let verdict = thp_allowed(
        read_bounded(&sys.join("shmem_enabled"), MAX_SYSFS_READ).as_deref(),
        read_bounded(&sys.join("hpage_pmd_size"), MAX_SYSFS_READ).as_deref(),
        read_bounded(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO_READ).as_deref(),
        dir,
    );
    match verdict {
        Ok(pmd) => Ok((Some(pmd), String::new())),
        Err(why) if mode == HugePages::Require => Err(Error::HugePagesUnavailable { why }),
        Err(why) => Ok((None, why)),
    }
}

/// Advises huge pages on `len` bytes at `addr` (a mapping of the block), touches one byte per
/// `pmd` bytes, and reports what backs the mapping with a reason.
pub(crate) fn advise_and_verify(addr: *mut u8, len: usize, pmd: u64) -> (Backing, String) {
    // SAFETY: `addr..addr + len` is one whole mapping the caller owns; MADV_HUGEPAGE changes
    // only how the kernel backs it, never its contents or validity.
    let r = unsafe { rustix::mm::madvise(addr.cast(), len, rustix::mm::Advice::LinuxHugepage) };
    if let Err(e) = r {
        return (
            Backing::Small,
            format!("madvise(MADV_HUGEPAGE) failed: {e}"),
        );
    }
    let mut off = 0usize;
    while off < len {
        // SAFETY: off < len, inside the mapping; the segment was reserved with fallocate (or is
        // at least its full length), and a volatile read of a private, unpublished block cannot
        // race with another writer.
        unsafe { std::ptr::read_volatile(addr.add(off)) };
        off = off.saturating_add(pmd as usize);
    }
    match pmd_mapped_kb(addr as usize) {
        Some(kb) if kb > 0 => (Backing::Thp, format!("{kb} kB mapped huge")),
        Some(_) => (
            Backing::ThpRequested,
            "madvise(MADV_HUGEPAGE) accepted but smaps shows no huge mapping".into(),
        ),
        None => (
            Backing::ThpRequested,
            "madvise(MADV_HUGEPAGE) accepted; smaps unreadable, not verified".into(),
        ),
    }
}

/// `ShmemPmdMapped` + `FilePmdMapped` (kB) of the mapping starting at `start`, from
/// `/proc/self/smaps` (`None` if the file or the mapping's entry cannot be read).
fn pmd_mapped_kb(start: usize) -> Option<u64> {
    let f = std::fs::File::open("/proc/self/smaps").ok()?;
    parse_smaps_pmd(std::io::BufReader::new(f.take(64 << 20)), start)
}

/// The PMD-mapped kB of the smaps entry whose range starts at `start`.
pub(crate) fn parse_smaps_pmd(r: impl BufRead, start: usize) -> Option<u64> {
    let mut inside = false;
    let mut total: Option<u64> = None;
    for line in r.lines() {
        let line = line.ok()?;
        let is_header = line
            .split(' ')
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'));
        if is_header {
            if inside {
                break;
            }
            let lo = line.split('-').next()?;
            inside = usize::from_str_radix(lo, 16).ok() == Some(start);
            continue;
        }
        if inside {
            for key in ["ShmemPmdMapped:", "FilePmdMapped:"] {
                if let Some(v) = line.strip_prefix(key) {
                    let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
                    total = Some(total.unwrap_or(0) + kb);
                }
            }
        }
    }
    if inside {
        Some(total.unwrap_or(0))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: [&str; 6] = ["always", "within_size", "advise", "never", "deny", "force"];
    const VALUES: [ShmemEnabled; 6] = [
        ShmemEnabled::Always,
        ShmemEnabled::WithinSize,
        ShmemEnabled::Advise,
        ShmemEnabled::Never,
        ShmemEnabled::Deny,
        ShmemEnabled::Force,
    ];

    #[test]
    fn shmem_enabled_parses_the_bracketed_word_at_every_position() {
        for (i, want) in VALUES.iter().enumerate() {
            let text: Vec<String> = WORDS
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    if i == j {
                        format!("[{w}]")
                    } else {
                        (*w).into()
                    }
                })
                .collect();
            let text = text.join(" ") + "\n";
            assert_eq!(parse_shmem_enabled(&text), Some(*want), "{text:?}");
        }
    }

    #[test]
    fn shmem_enabled_refuses_garbage_empty_oversized_and_ambiguous() {
        for bad in [
            "",
            "\n",
            "always within_size advise never deny force",
            "[always] [never]",
            "[sometimes]",
            "always [never] bogus",
            "[never",
            "never]",
            "\u{0}[never]",
        ] {
            assert_eq!(parse_shmem_enabled(bad), None, "{bad:?}");
        }
        let huge = format!("[never] {}", "always ".repeat(1000));
        assert_eq!(parse_shmem_enabled(&huge), None);
    }

    const MOUNTINFO: &str = "22 1 0:21 / / rw - ext4 /dev/vda1 rw\n\
        25 22 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=100k\n\
        26 22 0:24 / /huge rw - tmpfs tmpfs rw,size=100k,huge=advise\n\
        27 22 0:25 / /never rw - tmpfs tmpfs rw,huge=never\n";

    #[test]
    fn thp_decision_follows_shmem_enabled_and_the_mount() {
        let sys = |s: &str| Some(s.to_owned());
        let d = |shm: &str, dir: &str| {
            thp_allowed(
                sys(shm).as_deref(),
                Some("2097152\n"),
                Some(MOUNTINFO),
                Path::new(dir),
            )
        };
        // These machines: never, /dev/shm without huge=.
        let e = d("always within_size advise [never] deny force", "/dev/shm").unwrap_err();
        assert_eq!(
            e,
            "shmem_enabled is [never] and /dev/shm is mounted without huge="
        );
        assert_eq!(d("[advise]", "/huge"), Ok(2 << 20));
        assert_eq!(d("[never]", "/huge/x"), Ok(2 << 20));
        assert!(d("[advise]", "/never").unwrap_err().contains("huge=never"));
        assert!(d("[deny]", "/huge").unwrap_err().contains("[deny]"));
        assert_eq!(d("[force]", "/dev/shm"), Ok(2 << 20));
        assert!(d("[always]", "/tmp").unwrap_err().contains("not tmpfs"));
        assert!(d("garbage", "/huge").unwrap_err().contains("unparsable"));
        assert!(
            thp_allowed(None, Some("2097152"), Some(MOUNTINFO), Path::new("/huge"))
                .unwrap_err()
                .contains("unreadable")
        );
        for bad_pmd in [None, Some("x"), Some("3000000"), Some("0")] {
            assert!(
                thp_allowed(Some("[force]"), bad_pmd, None, Path::new("/huge"))
                    .unwrap_err()
                    .contains("hpage_pmd_size"),
                "{bad_pmd:?}"
            );
        }
    }

    #[test]
    fn backing_codes_round_trip_and_zero_is_unknown() {
        for b in [
            Backing::Unknown,
            Backing::Small,
            Backing::ThpRequested,
            Backing::Thp,
            Backing::Hugetlb,
        ] {
            assert_eq!(Backing::from_code(b.code()), b);
        }
        assert_eq!(Backing::from_code(0), Backing::Unknown);
        assert_eq!(Backing::from_code(99), Backing::Unknown);
    }

    #[test]
    fn smaps_pmd_sums_the_entry_that_starts_at_the_address() {
        let smaps = "7f0000000000-7f0000400000 rw-s 00000000 00:17 5 /dev/shm/x\n\
            Size:               4096 kB\n\
            ShmemPmdMapped:     2048 kB\n\
            FilePmdMapped:         0 kB\n\
            7f0000400000-7f0000600000 rw-s 00000000 00:17 6 /dev/shm/y\n\
            ShmemPmdMapped:        0 kB\n";
        assert_eq!(
            parse_smaps_pmd(smaps.as_bytes(), 0x7f00_0000_0000),
            Some(2048)
        );
        assert_eq!(parse_smaps_pmd(smaps.as_bytes(), 0x7f00_0040_0000), Some(0));
        assert_eq!(parse_smaps_pmd(smaps.as_bytes(), 0x1000), None);
    }
}

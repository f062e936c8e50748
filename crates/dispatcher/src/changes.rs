//! Telling when watched files changed: their fingerprint, and a wake-up as
//! soon as the kernel reports a change.
//!
//! Polling alone (a fingerprint every `--watch-interval`) applies an edit up
//! to one interval late. The kernel's file notifications (inotify) wake the
//! watcher within milliseconds instead. Polling stays as the fallback and
//! the judge: a notification only makes the watcher look at its fingerprint
//! early, so a missed or spurious notification changes nothing but timing —
//! which matters because notifications are known to miss some changes
//! (files on network filesystems, a ConfigMap volume's `..data` symlink
//! swap seen from a watch set up on the file itself).
//!
//! Each watched file is watched through its directory (atomic renames and
//! symlink swaps replace the file's inode, which a watch on the file would
//! lose); each watched directory recursively.

use notify::{RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// How long the watcher waits after a notification before looking, so a
/// file written in several system calls is read once, whole.
const SETTLE: Duration = Duration::from_millis(25);

/// Wakes on changes under a set of paths.
pub struct ChangeNotifier {
    woken: Arc<Notify>,
    /// Dropping the watcher ends the notifications; `None` when the kernel
    /// refused (out of inotify watches): polling alone then.
    watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for ChangeNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeNotifier")
            .field("notifications", &self.watcher.is_some())
            .finish()
    }
}

impl ChangeNotifier {
    /// Watch `paths` (files or directories). Never fails: without
    /// notifications the caller's polling still sees every change.
    pub fn new(paths: &[PathBuf]) -> ChangeNotifier {
        let woken = Arc::new(Notify::new());
        let wake = woken.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Errors (a queue overflow) also wake: the fingerprint decides.
            if event.as_ref().map_or(true, |e| !e.kind.is_access()) {
                wake.notify_one();
            }
        });
        let watcher = match watcher {
            Ok(mut watcher) => {
                let mut watching = 0;
                for (path, mode) in targets(paths) {
                    match watcher.watch(&path, mode) {
                        Ok(()) => watching += 1,
                        Err(e) => tracing::warn!(
                            path = %path.display(),
                            error = %e,
                            "no change notifications for this path: changes are seen by polling"
                        ),
                    }
                }
                (watching > 0).then_some(watcher)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file change notifications: changes are seen by polling");
                None
            }
        };
        ChangeNotifier { woken, watcher }
    }

    /// Whether the kernel delivers notifications for at least one path.
    pub fn notifies(&self) -> bool {
        self.watcher.is_some()
    }

    /// Wait for the next change notification (forever when there are
    /// none), then let the writer finish.
    pub async fn changed(&self) {
        self.woken.notified().await;
        tokio::time::sleep(SETTLE).await;
    }
}

/// What to watch for each path: a directory recursively; a file through
/// its parent directory.
fn targets(paths: &[PathBuf]) -> Vec<(PathBuf, RecursiveMode)> {
    let mut out: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for path in paths {
        let target = if path.is_dir() {
            (path.clone(), RecursiveMode::Recursive)
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            (parent, RecursiveMode::NonRecursive)
        };
        if !out.iter().any(|(p, _)| *p == target.0) {
            out.push(target);
        }
    }
    out
}

/// What a set of watched files looked like: path, size, modification time
/// and inode of every file, following symlinks into directories.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

/// The fingerprint of `paths` (files or directories, walked recursively):
/// equal fingerprints mean nothing was added, removed, renamed or written.
pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    for path in paths {
        fingerprint_path(path, &mut out, 0);
    }
    out.sort();
    out
}

fn fingerprint_path(path: &Path, out: &mut Fingerprint, depth: usize) {
    use std::os::unix::fs::MetadataExt;
    if depth > 16 {
        return;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        out.push((path.to_path_buf(), u64::MAX, None, 0));
        return;
    };
    if meta.is_dir() {
        // The directory's own mtime catches added and removed files.
        out.push((path.to_path_buf(), 0, meta.modified().ok(), meta.ino()));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                fingerprint_path(&entry.path(), out, depth + 1);
            }
        }
    } else {
        out.push((
            path.to_path_buf(),
            meta.len(),
            meta.modified().ok(),
            meta.ino(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_on_a_write_and_on_a_rename_into_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("contract.json");
        std::fs::write(&file, "{}").expect("write");
        let notifier = ChangeNotifier::new(std::slice::from_ref(&file));
        assert!(notifier.notifies());

        std::fs::write(&file, "{\"generation\": 2}").expect("write");
        tokio::time::timeout(Duration::from_secs(5), notifier.changed())
            .await
            .expect("a write wakes the watcher");

        let tmp = dir.path().join(".contract.json.tmp");
        std::fs::write(&tmp, "{\"generation\": 3}").expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
        tokio::time::timeout(Duration::from_secs(5), notifier.changed())
            .await
            .expect("a rename into place wakes the watcher");
    }

    #[tokio::test]
    async fn watches_directories_recursively() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("team-a")).expect("mkdir");
        let notifier = ChangeNotifier::new(&[dir.path().to_path_buf()]);
        std::fs::write(dir.path().join("team-a/channels.yaml"), "---\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), notifier.changed())
            .await
            .expect("a file written in a subdirectory wakes the watcher");
    }

    #[test]
    fn a_missing_path_leaves_polling() {
        let notifier = ChangeNotifier::new(&[PathBuf::from("/nonexistent/dir/manifests.yaml")]);
        assert!(!notifier.notifies());
    }
}

//! What the chat clients observe, as the chat and compliance checkers read
//! it, and the names of a chat workload's users, rooms and files that the
//! runner, the clients and the checkers share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Users and rooms of chat workload `w`: `c<w>u<i>@corp.example`,
/// `c<w>-room<j>`; the last `walled` users are members walled off every room.
pub fn chat_users(w: usize, n: u64, domain: &str) -> Vec<String> {
    (1..=n).map(|i| format!("c{w}u{i}@{domain}")).collect()
}
pub fn chat_rooms(w: usize, n: u64) -> Vec<String> {
    (1..=n).map(|j| format!("c{w}-room{j}")).collect()
}

/// What one post became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    Accepted { seq: u64 },
    Rejected(String),
    Unknown,
}

#[derive(Clone, Debug)]
pub struct PostOp {
    pub room: String,
    pub author: String,
    pub text: String,
    pub outcome: PostOutcome,
    /// When the author sent it (ms of the run).
    pub sent_ms: u64,
}

/// What one user saw of one room.
#[derive(Clone, Debug, Default)]
pub struct RoomView {
    /// The room's latest sequence number when the user first joined: every
    /// later post is owed to the user.
    pub baseline: Option<u64>,
    /// Delivered posts: sequence number → post id.
    pub delivered: BTreeMap<u64, String>,
    /// Post copies that arrived again (dropped by the client: informative).
    pub redundant: u64,
    /// Copies received at all while walled off (must stay 0).
    pub received_while_walled: u64,
    /// Numbers the store said hold no post (cleared), counted as read.
    pub skipped: BTreeSet<u64>,
}

/// A clear an operator made (answered by the cluster).
#[derive(Clone, Debug)]
pub struct ClearRecord {
    pub room: String,
    /// Only posts before this time (ms of the run), if given.
    pub before: Option<u64>,
    /// The last number it covers.
    pub through: u64,
    /// When the operator had the answer (ms of the run).
    pub done_ms: u64,
}

/// A post replacement an operator made.
#[derive(Clone, Debug)]
pub struct ReplaceRecord {
    pub post: String,
    pub room: String,
    pub seq: u64,
    pub text: String,
    pub done_ms: u64,
}

/// A room an operator disabled.
#[derive(Clone, Debug)]
pub struct DisableRecord {
    pub room: String,
    pub done_ms: u64,
}

/// A post copy a client received (kept only where an operator manages
/// records): which post, when (ms of the run), with what text.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub user: String,
    pub post: String,
    pub at_ms: u64,
    pub text: String,
}

/// The content of a simulated file: its name repeated to `size` bytes, so
/// that a download can be checked without keeping the upload.
pub fn file_content(name: &str, size: usize) -> Vec<u8> {
    // Whole copies of the name then a cut: memcpy speed, where a byte-wise
    // `cycle().take()` was a tenth of a chat-files run.
    let name = name.as_bytes();
    if name.is_empty() {
        return Vec::new();
    }
    let size = size.max(1);
    let mut data = name.repeat(size.div_ceil(name.len()));
    data.truncate(size);
    data
}

/// Whether `data` is `file_content(name, data.len())`, without building it.
pub fn is_file_content(name: &str, data: &[u8]) -> bool {
    let name = name.as_bytes();
    if name.is_empty() || data.is_empty() {
        return data.is_empty() && name.is_empty();
    }
    data.chunks(name.len()).all(|c| c == &name[..c.len()])
}

/// A file the Web service acknowledged.
#[derive(Clone, Debug)]
pub struct FileRecord {
    pub room: String,
    pub name: String,
    pub size: u64,
}

/// Everything the chat clients observed.
#[derive(Clone, Default)]
pub struct ChatLog {
    /// Files acknowledged as stored, by id.
    pub files: BTreeMap<String, FileRecord>,
    pub downloads_ok: u64,
    /// Downloads whose content differs from the upload.
    pub downloads_corrupt: Vec<String>,
    /// Refusals by the Web service (none expected for members).
    pub file_refusals: Vec<String>,
    pub posts: BTreeMap<String, PostOp>,
    pub views: BTreeMap<(String, String), RoomView>,
    pub walled: BTreeSet<(String, String)>,
    pub refused_joins: u64,
    pub busy: u64,
    pub reconnects: u64,
    /// Posts sent again under their id for want of an answer
    /// (`retry_posts`).
    pub post_retries: u64,
    /// Rooms left for a while (churn); each rejoin must catch up.
    pub leaves: u64,
    /// Leaves the Channel server confirmed (recorded for compliance), per
    /// (user, room).
    pub leaves_confirmed: BTreeMap<(String, String), u64>,
    /// Good downloads per (user, file id).
    pub downloads_by: BTreeMap<(String, String), u64>,
    /// Records management done by operators, and what did not get done.
    pub clears: Vec<ClearRecord>,
    pub replaces: Vec<ReplaceRecord>,
    pub disables: Vec<DisableRecord>,
    pub records_failed: Vec<String>,
    pub receipts: Vec<Receipt>,
}

pub type SharedChatLog = Arc<Mutex<ChatLog>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_content_repeats_the_name_and_is_recognised() {
        assert_eq!(file_content("abc", 7), b"abcabca".to_vec());
        assert_eq!(file_content("abc", 0), b"a".to_vec());
        assert_eq!(file_content("abc", 3), b"abc".to_vec());
        for n in [1, 2, 3, 4, 5, 6, 7, 1000] {
            assert!(is_file_content("abc", &file_content("abc", n)), "{n}");
        }
        assert!(!is_file_content("abc", b"abcabd"));
        assert!(!is_file_content("abc", b"abd"));
        assert!(!is_file_content("abc", b""));
        assert!(!is_file_content("abc", &file_content("abd", 10)));
    }
}

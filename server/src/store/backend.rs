//! The records storage interface every backend implements, and what a
//! node knows about the servers sharing it.

use super::error::StoreResult;
use super::records::{AuditEntry, Avatar, Millis, Principal, Recording, SessionRecord, Tenant};

/// Records storage. Every method is blocking; call through [`Store::run`].
pub trait Backend: Send + Sync + 'static {
    fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>>;
    fn count_tenants(&self) -> StoreResult<u64>;
    /// Stores a key by the SHA-256 of its secret.
    fn create_api_key(
        &self,
        key_id: &str,
        tenant_id: &str,
        key_hash: &[u8; 32],
        label: &str,
    ) -> StoreResult<()>;
    /// Resolves an unrevoked key by hash.
    fn principal_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Principal>>;

    /// Inserts the avatar with its consent and audit entry in one transaction.
    fn insert_avatar(&self, avatar: &Avatar, audit: &AuditEntry) -> StoreResult<()>;
    fn get_avatar(&self, tenant_id: &str, avatar_id: &str) -> StoreResult<Option<Avatar>>;
    /// Newest first; `before` is an exclusive upper bound on the id.
    fn list_avatars(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Avatar>>;
    /// Deletes the avatar row and its consent; true when it existed.
    fn delete_avatar(
        &self,
        tenant_id: &str,
        avatar_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// Every avatar id, for the startup sweep of orphaned files.
    fn all_avatar_ids(&self) -> StoreResult<Vec<String>>;
    /// Which of `ids` name avatars that exist (of any tenant).
    fn existing_avatar_ids(&self, ids: &[String]) -> StoreResult<Vec<String>>;

    fn insert_session(&self, session: &SessionRecord, audit: &AuditEntry) -> StoreResult<()>;
    fn close_session(
        &self,
        session_id: &str,
        closed_at: Millis,
        reason: i32,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    fn get_session(&self, tenant_id: &str, session_id: &str) -> StoreResult<Option<SessionRecord>>;
    fn list_sessions(
        &self,
        tenant_id: &str,
        include_closed: bool,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Every session record of a tenant, or of one avatar of it.
    fn sessions_of(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes closed session records of a tenant (or of one avatar).
    fn delete_closed_sessions(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<usize>;
    /// Inserts a recording (being written) with its audit entry.
    fn insert_recording(&self, recording: &Recording, audit: &AuditEntry) -> StoreResult<()>;
    /// A recording's size and length so far; `ended_at` once it stopped.
    fn update_recording(
        &self,
        recording_id: &str,
        bytes: u64,
        duration_ms: u64,
        ended_at: Option<Millis>,
    ) -> StoreResult<()>;
    fn get_recording(&self, tenant_id: &str, recording_id: &str) -> StoreResult<Option<Recording>>;
    /// Newest first, of the tenant or of one of its avatars; `before` is an
    /// exclusive upper bound on the id.
    fn list_recordings(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Recording>>;
    /// Ends the recordings still marked as being written whose session is
    /// closed (their writer died with its server); returns how many.
    fn end_orphaned_recordings(&self, ended_at: Millis) -> StoreResult<usize>;
    /// Recordings (of any tenant) that ended before `before`, oldest first,
    /// at most `limit`: those retention deletes.
    fn recordings_ended_before(&self, before: Millis, limit: usize) -> StoreResult<Vec<Recording>>;
    /// Every recording id, for the startup sweep of orphaned files.
    fn all_recording_ids(&self) -> StoreResult<Vec<String>>;
    /// Deletes a recording's record; true when it existed.
    fn delete_recording(
        &self,
        tenant_id: &str,
        recording_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;

    /// This server process's node id; sessions it inserts carry it.
    fn node_id(&self) -> &str;
    /// Records that this node is alive at `now`, reachable at `url` (empty:
    /// not advertised).
    fn heartbeat(&self, now: Millis, url: &str) -> StoreResult<()>;
    /// The node running the open session `session_id` (of any tenant) and
    /// that node's advertised URL (empty: none); `None` when the session is
    /// closed, unknown or older than nodes.
    fn session_location(&self, session_id: &str) -> StoreResult<Option<(String, String)>>;
    /// Marks open sessions of other nodes not alive since `dead_before`
    /// (or never recorded alive) as closed; returns how many. Forgets
    /// nodes that have been gone for a day.
    fn close_sessions_of_dead_nodes(
        &self,
        dead_before: Millis,
        closed_at: Millis,
        reason: i32,
    ) -> StoreResult<usize>;
    /// Forgets this node (a clean stop: its sessions are closed).
    fn leave(&self) -> StoreResult<()>;

    fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Deletes audit entries older than `audit_before` and closed sessions
    /// closed before `sessions_before`; returns (audit, sessions) deleted.
    fn purge(&self, audit_before: Millis, sessions_before: Millis) -> StoreResult<(usize, usize)>;
    /// Audit entries of a tenant, oldest first.
    fn audit_for_tenant(&self, tenant_id: &str, limit: usize) -> StoreResult<Vec<AuditEntry>>;
    /// Audit entries of a tenant with their sequence numbers, newest first,
    /// below `before_seq`, optionally only about `target`.
    fn list_audit(
        &self,
        tenant_id: &str,
        target: Option<&str>,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
}

/// How long a node may go without marking itself alive, and whether other
/// servers share the records.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Other server processes may use the same records and files.
    pub shared: bool,
    /// A node not seen for this long is dead.
    pub node_ttl: std::time::Duration,
}

impl Liveness {
    pub const EMBEDDED: Self = Self {
        shared: false,
        node_ttl: std::time::Duration::from_secs(30),
    };
}

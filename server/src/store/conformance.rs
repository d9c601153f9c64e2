//! What every [`Backend`] must do, checked against SQLite and PostgreSQL
//! alike (each backend's tests call these on a fresh database).

use super::*;
use crate::ids::{AVATAR, CONSENT, RECORDING, SESSION, TENANT, new_id};

pub fn tenant(b: &dyn Backend, name: &str) -> Tenant {
    let t = Tenant {
        id: new_id(TENANT),
        name: name.into(),
        created_at: now_ms(),
    };
    b.create_tenant(&t).unwrap();
    t
}

pub fn avatar(tenant_id: &str) -> Avatar {
    Avatar {
        id: new_id(AVATAR),
        tenant_id: tenant_id.into(),
        display_name: "Host 主播".into(),
        state: AvatarState::Ready,
        failure_reason: String::new(),
        image_format: ImageFormat::Jpeg,
        image_bytes: 10,
        image_sha256: "00".into(),
        consent: Consent {
            id: new_id(CONSENT),
            uploader: "op".into(),
            subject_name: "Li Wei 李伟".into(),
            subject_consented: true,
            subject_is_minor: false,
            guardian_name: String::new(),
            purpose: "livestream".into(),
            consented_at: 1,
            policy_version: "v1".into(),
            recorded_at: 2,
        },
        labels: [("k".to_string(), "v".to_string())].into(),
        created_at: now_ms(),
        original_kept: true,
        face: FaceSummary {
            faces_found: 2,
            score: 0.875,
        },
    }
}

pub fn session(tenant_id: &str, avatar_id: &str) -> SessionRecord {
    SessionRecord {
        id: new_id(SESSION),
        tenant_id: tenant_id.into(),
        avatar_id: avatar_id.into(),
        language: "zh-CN".into(),
        voice_id: "zh-CN-baker".into(),
        speed: 1.25,
        width: 512,
        height: 512,
        fps: 25,
        video_bitrate_kbps: 1200,
        audio_bitrate_kbps: 48,
        idle_timeout_secs: 300,
        labels: [("room".to_string(), "A".to_string())].into(),
        created_at: now_ms(),
        closed_at: None,
        close_reason: None,
        node_id: None,
    }
}

fn audit(tenant_id: &str, target: &str) -> AuditEntry {
    AuditEntry {
        at: now_ms(),
        tenant_id: Some(tenant_id.into()),
        actor: "ak_test".into(),
        action: "test".into(),
        target: target.into(),
        outcome: "ok".into(),
    }
}

pub fn tenants_and_keys(b: &dyn Backend) {
    let t = tenant(b, "acme");
    assert_eq!(b.tenant_by_name("acme").unwrap(), Some(t.clone()));
    assert_eq!(b.tenant_by_name("nobody").unwrap(), None);
    let dup = Tenant {
        id: new_id(TENANT),
        name: "acme".into(),
        created_at: 0,
    };
    assert!(matches!(
        b.create_tenant(&dup).unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert_eq!(b.count_tenants().unwrap(), 1);
    let hash = [7u8; 32];
    b.create_api_key("ak_1", &t.id, &hash, "ci").unwrap();
    let p = b.principal_by_key_hash(&hash).unwrap().unwrap();
    assert_eq!(
        (p.tenant_id.as_str(), p.key_id.as_str()),
        (t.id.as_str(), "ak_1")
    );
    assert!(b.principal_by_key_hash(&[8u8; 32]).unwrap().is_none());
}

pub fn avatars_are_tenant_scoped_and_paged(b: &dyn Backend) {
    let t1 = tenant(b, "one");
    let t2 = tenant(b, "two");
    let mut ids = vec![];
    for _ in 0..5 {
        let a = avatar(&t1.id);
        b.insert_avatar(&a, &audit(&t1.id, &a.id)).unwrap();
        ids.push(a.id);
    }
    let got = b.get_avatar(&t1.id, &ids[0]).unwrap().unwrap();
    let mut want = avatar(&t1.id);
    want.id = ids[0].clone();
    want.consent.id = got.consent.id.clone();
    want.created_at = got.created_at;
    assert_eq!(got, want, "every field round-trips");
    assert!(b.get_avatar(&t2.id, &ids[0]).unwrap().is_none());
    let page1 = b.list_avatars(&t1.id, None, 2).unwrap();
    assert_eq!(page1.len(), 2);
    assert_eq!(page1[0].id, ids[4]);
    assert_eq!(page1[1].id, ids[3]);
    let page2 = b.list_avatars(&t1.id, Some(&page1[1].id), 10).unwrap();
    assert_eq!(
        page2.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [&ids[2], &ids[1], &ids[0]]
    );
    assert!(b.list_avatars(&t2.id, None, 10).unwrap().is_empty());
    let mut all = b.all_avatar_ids().unwrap();
    all.sort();
    assert_eq!(all, ids);
    let asked = [ids[1].clone(), "av_nothing".to_string(), ids[3].clone()];
    let mut present = b.existing_avatar_ids(&asked).unwrap();
    present.sort();
    assert_eq!(present, [ids[1].clone(), ids[3].clone()]);
    assert!(b.existing_avatar_ids(&[]).unwrap().is_empty());
    let del = audit(&t1.id, &ids[0]);
    assert!(!b.delete_avatar(&t2.id, &ids[0], &del).unwrap());
    assert!(b.delete_avatar(&t1.id, &ids[0], &del).unwrap());
    assert!(b.get_avatar(&t1.id, &ids[0]).unwrap().is_none());
    assert!(!b.delete_avatar(&t1.id, &ids[0], &del).unwrap());
    // Insert and delete wrote their audit entries in the same transaction.
    let entries = b.list_audit(&t1.id, Some(&ids[0]), None, 10).unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

pub fn sessions_open_close_list_and_delete(b: &dyn Backend) {
    let t = tenant(b, "s");
    let other = tenant(b, "other");
    let a = avatar(&t.id);
    b.insert_avatar(&a, &audit(&t.id, &a.id)).unwrap();
    let mut ids = vec![];
    for _ in 0..4 {
        let s = session(&t.id, &a.id);
        b.insert_session(&s, &audit(&t.id, &s.id)).unwrap();
        ids.push(s.id);
    }
    let loose = session(&t.id, "av_other");
    b.insert_session(&loose, &audit(&t.id, &loose.id)).unwrap();
    let got = b.get_session(&t.id, &ids[0]).unwrap().unwrap();
    let mut want = session(&t.id, &a.id);
    want.id = ids[0].clone();
    want.created_at = got.created_at;
    want.node_id = Some(b.node_id().to_owned());
    assert_eq!(
        got, want,
        "every field round-trips, the node is the inserter's"
    );
    assert!(b.get_session(&other.id, &ids[0]).unwrap().is_none());

    b.close_session(&ids[1], 1234, 3, &audit(&t.id, &ids[1]))
        .unwrap();
    // Closing twice keeps the first close.
    b.close_session(&ids[1], 9999, 4, &audit(&t.id, &ids[1]))
        .unwrap();
    let closed = b.get_session(&t.id, &ids[1]).unwrap().unwrap();
    assert_eq!(
        (closed.closed_at, closed.close_reason),
        (Some(1234), Some(3))
    );

    let open = b.list_sessions(&t.id, false, None, 10).unwrap();
    assert_eq!(open.len(), 4);
    assert!(open.iter().all(|s| s.closed_at.is_none()));
    let page = b.list_sessions(&t.id, true, None, 2).unwrap();
    assert_eq!(page[0].id, loose.id);
    assert_eq!(page[1].id, ids[3]);
    let rest = b.list_sessions(&t.id, true, Some(&ids[3]), 10).unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].id, ids[2]);

    assert_eq!(b.sessions_of(&t.id, Some(&a.id)).unwrap().len(), 4);
    assert_eq!(b.sessions_of(&t.id, None).unwrap().len(), 5);
    assert!(b.sessions_of(&other.id, None).unwrap().is_empty());
    assert_eq!(
        b.delete_closed_sessions(&t.id, Some("av_other")).unwrap(),
        0
    );
    assert_eq!(b.delete_closed_sessions(&t.id, Some(&a.id)).unwrap(), 1);
    assert!(b.get_session(&t.id, &ids[1]).unwrap().is_none());
    assert_eq!(b.sessions_of(&t.id, None).unwrap().len(), 4);
}

pub fn audit_pages_and_purges(b: &dyn Backend) {
    let t = tenant(b, "audited");
    let mut e = audit(&t.id, "x");
    for i in 0..5 {
        e.at = 1000 + i;
        e.target = if i % 2 == 0 { "even" } else { "odd" }.into();
        b.append_audit(&e).unwrap();
    }
    let mut system = AuditEntry::new(None, "sweep", "all", "ok");
    system.at = 1;
    b.append_audit(&system).unwrap();
    let oldest_first = b.audit_for_tenant(&t.id, 10).unwrap();
    assert_eq!(
        oldest_first.iter().map(|e| e.at).collect::<Vec<_>>(),
        [1000, 1001, 1002, 1003, 1004]
    );
    let newest = b.list_audit(&t.id, None, None, 2).unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0].1.at, 1004);
    assert!(newest[0].0 > newest[1].0);
    let older = b.list_audit(&t.id, None, Some(newest[1].0), 10).unwrap();
    assert_eq!(
        older.iter().map(|(_, e)| e.at).collect::<Vec<_>>(),
        [1002, 1001, 1000]
    );
    let even = b.list_audit(&t.id, Some("even"), None, 10).unwrap();
    assert_eq!(even.len(), 3);

    let a = avatar(&t.id);
    b.insert_avatar(&a, &audit(&t.id, &a.id)).unwrap();
    let s = session(&t.id, &a.id);
    b.insert_session(&s, &audit(&t.id, &s.id)).unwrap();
    b.close_session(&s.id, 500, 1, &audit(&t.id, &s.id))
        .unwrap();
    let kept = session(&t.id, &a.id);
    b.insert_session(&kept, &audit(&t.id, &kept.id)).unwrap();
    // Audit older than 1003 (3 of the tenant's, the system one), and the
    // session closed before 600; the open one stays.
    assert_eq!(b.purge(1003, 600).unwrap(), (4, 1));
    assert!(b.get_session(&t.id, &s.id).unwrap().is_none());
    assert!(b.get_session(&t.id, &kept.id).unwrap().is_some());
    assert_eq!(b.audit_for_tenant(&t.id, 100).unwrap()[0].at, 1003);
}

/// `a` and `b` are two server processes (nodes) on the same records.
pub fn dead_nodes_sessions_close(a: &dyn Backend, b: &dyn Backend) {
    assert_ne!(a.node_id(), b.node_id());
    let t = tenant(a, "nodes");
    let av = avatar(&t.id);
    a.insert_avatar(&av, &audit(&t.id, &av.id)).unwrap();
    let on_a = session(&t.id, &av.id);
    a.insert_session(&on_a, &audit(&t.id, &on_a.id)).unwrap();
    let on_b = session(&t.id, &av.id);
    b.insert_session(&on_b, &audit(&t.id, &on_b.id)).unwrap();
    a.heartbeat(10_000, "http://a:8700").unwrap();
    b.heartbeat(10_000, "").unwrap();
    // Where each open session runs, and that node's address.
    assert_eq!(
        b.session_location(&on_a.id).unwrap(),
        Some((a.node_id().to_owned(), "http://a:8700".to_owned()))
    );
    assert_eq!(
        a.session_location(&on_b.id).unwrap(),
        Some((b.node_id().to_owned(), String::new()))
    );
    assert_eq!(a.session_location("se_unknown").unwrap(), None);
    // Both alive since 10 000: nobody closes anything.
    assert_eq!(b.close_sessions_of_dead_nodes(9_000, 11_000, 7).unwrap(), 0);
    assert_eq!(a.close_sessions_of_dead_nodes(9_000, 11_000, 7).unwrap(), 0);
    // `a` stops marking itself alive; `b` (still alive) closes a's session
    // and not its own.
    b.heartbeat(20_000, "").unwrap();
    assert_eq!(
        b.close_sessions_of_dead_nodes(15_000, 20_000, 7).unwrap(),
        1
    );
    let closed = b.get_session(&t.id, &on_a.id).unwrap().unwrap();
    assert_eq!(
        (closed.closed_at, closed.close_reason),
        (Some(20_000), Some(7))
    );
    assert_eq!(
        b.session_location(&on_a.id).unwrap(),
        None,
        "closed: nowhere"
    );
    assert!(
        b.get_session(&t.id, &on_b.id)
            .unwrap()
            .unwrap()
            .closed_at
            .is_none()
    );
    // A node never closes its own sessions, even when it looks dead.
    assert_eq!(
        b.close_sessions_of_dead_nodes(now_ms() + 1, 21_000, 7)
            .unwrap(),
        0
    );
    // After a clean stop (`leave`), b's open session is closed by the next
    // node to look.
    b.leave().unwrap();
    assert_eq!(a.close_sessions_of_dead_nodes(0, 22_000, 7).unwrap(), 1);
}

pub fn recording(tenant_id: &str, avatar_id: &str, session_id: &str) -> Recording {
    Recording {
        id: new_id(RECORDING),
        tenant_id: tenant_id.into(),
        session_id: session_id.into(),
        avatar_id: avatar_id.into(),
        started_at: now_ms(),
        ended_at: None,
        bytes: 0,
        duration_ms: 0,
    }
}

pub fn recordings_grow_end_list_and_delete(b: &dyn Backend) {
    let t = tenant(b, "rec");
    let other = tenant(b, "rec-other");
    let rec = |avatar_id: &str| recording(&t.id, avatar_id, &new_id(SESSION));
    let audit = AuditEntry::new(None, "recording.start", "x", "ok");
    let (a, b2, c) = (rec("av_a"), rec("av_b"), rec("av_a"));
    for r in [&a, &b2, &c] {
        b.insert_recording(r, &audit).unwrap();
    }
    b.update_recording(&a.id, 1000, 2000, None).unwrap();
    b.update_recording(&a.id, 5000, 9000, Some(123)).unwrap();
    let got = b.get_recording(&t.id, &a.id).unwrap().unwrap();
    assert_eq!(
        (got.bytes, got.duration_ms, got.ended_at),
        (5000, 9000, Some(123))
    );
    // A late progress update does not reopen it.
    b.update_recording(&a.id, 5000, 9000, None).unwrap();
    assert_eq!(
        b.get_recording(&t.id, &a.id).unwrap().unwrap().ended_at,
        Some(123)
    );
    assert!(b.get_recording(&other.id, &a.id).unwrap().is_none());
    let all = b.list_recordings(&t.id, None, None, 10).unwrap();
    assert_eq!(
        all.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&c.id, &b2.id, &a.id]
    );
    let of_a = b.list_recordings(&t.id, Some("av_a"), None, 10).unwrap();
    assert_eq!(of_a.len(), 2);
    let page = b.list_recordings(&t.id, None, Some(&c.id), 1).unwrap();
    assert_eq!(page[0].id, b2.id);
    assert!(
        b.list_recordings(&other.id, None, None, 10)
            .unwrap()
            .is_empty()
    );
    // A recording whose session closed without its writer ending it.
    let sess = session(&t.id, "av_a");
    b.insert_session(&sess, &audit).unwrap();
    let orphan = recording(&t.id, "av_a", &sess.id);
    b.insert_recording(&orphan, &audit).unwrap();
    assert_eq!(
        b.end_orphaned_recordings(7).unwrap(),
        0,
        "its session is open"
    );
    b.close_session(&sess.id, 5, 1, &audit).unwrap();
    assert_eq!(b.end_orphaned_recordings(7).unwrap(), 1);
    assert_eq!(
        b.get_recording(&t.id, &orphan.id)
            .unwrap()
            .unwrap()
            .ended_at,
        Some(7)
    );
    // Retention finds ended recordings by age, oldest first.
    let old = b.recordings_ended_before(124, 10).unwrap();
    assert_eq!(
        old.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&orphan.id, &a.id]
    );
    assert!(b.recordings_ended_before(7, 10).unwrap().is_empty());
    assert_eq!(b.all_recording_ids().unwrap().len(), 4);
    let del = AuditEntry::new(None, "recording.delete", a.id.clone(), "ok");
    assert!(!b.delete_recording(&other.id, &a.id, &del).unwrap());
    assert!(b.delete_recording(&t.id, &a.id, &del).unwrap());
    assert!(b.get_recording(&t.id, &a.id).unwrap().is_none());
}

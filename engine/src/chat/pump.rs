//! The hub's loop: take router messages and storage events, act on them,
//! pass on what the owner asked for, write gathered cursors, wake the
//! shards sent to. One task per shard.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use protocol::{ErrorCode, ServerMsg, UnixMillis, close};

use super::hub::{Hub, Ticket, error, now_millis};
use super::jobs::StoreEvent;
use super::{Handoff, ShardMsg, Watcher};
use crate::shard::Shard;

/// Router messages and storage events handled per turn before the pump
/// yields to the connections' tasks.
const EVENTS_PER_TURN_MAX: usize = 1024;

/// How soon a shard retries a backlog towards a full router queue.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);

/// Runs the hub of `shard` for as long as the shard's runtime runs (it
/// outlives the connections, so in-flight acks still reach them).
pub(crate) async fn pump(shard: Rc<Shard>) {
    let hub = &shard.chat;
    loop {
        let mut handled = 0;
        while handled < EVENTS_PER_TURN_MAX {
            let msg = hub.link().borrow_mut().try_recv();
            let Some((_, msg)) = msg else {
                break;
            };
            handled += on_router(&shard, msg);
        }
        while handled < EVENTS_PER_TURN_MAX {
            let Some(event) = hub.inbox.pop() else {
                break;
            };
            on_store(hub, event);
            handled += 1;
        }
        hub.run_owner();
        super::notify::tick(hub);
        hub.publish_queue_depth();
        hub.flush_cursors();
        let backlog = hub.drain_backlog();
        hub.flush();
        if handled >= EVENTS_PER_TURN_MAX {
            // More may be waiting: let the connections run, then go on.
            yield_now().await;
            continue;
        }
        let push_close = hub
            .notify
            .as_ref()
            .and_then(super::notify::Notify::next_close);
        let wake = match (backlog, push_close) {
            (true, _) => Some(BACKLOG_RETRY),
            (false, Some(at)) => Some(at.saturating_duration_since(std::time::Instant::now())),
            (false, None) => None,
        };
        match wake {
            Some(after) => {
                monoio::select! {
                    () = wait_for_work(hub) => {}
                    () = monoio::time::sleep(after) => {}
                }
            }
            None => wait_for_work(hub).await,
        }
    }
}

/// Lets every other ready task of the shard run once before going on.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Ready when a router message or a storage event is waiting.
async fn wait_for_work(hub: &Hub) {
    std::future::poll_fn(|cx| {
        if hub.link().borrow().poll_incoming(cx).is_ready() {
            return Poll::Ready(());
        }
        hub.inbox.poll_ready(cx)
    })
    .await;
}

/// Handles one router message; returns its weight against
/// `EVENTS_PER_TURN_MAX` (a delivery to many users weighs more).
fn on_router(shard: &Rc<Shard>, msg: ShardMsg) -> usize {
    let hub = &shard.chat;
    let weight = match &msg {
        ShardMsg::Deliver { users, .. } | ShardMsg::Relay { users, .. } => 1 + users.len() / 64,
        _ => 1,
    };
    match msg {
        ShardMsg::Handoff(h) => attach(shard, *h),
        ShardMsg::Append(a) => hub.owner.borrow_mut().on_append(a, now_millis()),
        ShardMsg::OpenDirect {
            conv,
            pair,
            requester,
            reply,
        } => hub
            .owner
            .borrow_mut()
            .on_open_direct(conv, pair, requester, reply, now_millis()),
        ShardMsg::Group(req) => hub.owner.borrow_mut().on_group(req, now_millis()),
        ShardMsg::Signal { conv, from, signal } => {
            hub.owner.borrow_mut().on_signal(conv, from, signal);
        }
        ShardMsg::ToConn { conn, msg } => {
            let s = hub.sessions.borrow().get(&conn).cloned();
            if let Some(s) = s {
                s.answered(&msg);
                s.push(&msg);
            }
        }
        ShardMsg::Deliver {
            msg,
            users,
            private,
        } => {
            for s in sessions_of(hub, &users) {
                s.deliver(hub, msg.clone());
            }
            super::notify::on_deliver(hub, &msg, &users, private);
        }
        ShardMsg::Relay { users, msg } => {
            for s in sessions_of(hub, &users) {
                s.push(&*msg);
            }
        }
        ShardMsg::Watch { target, watcher } => watch(hub, target, watcher),
        ShardMsg::Unwatch { target, watcher } => {
            hub.presence.borrow_mut().unwatch(target, watcher);
        }
    }
    weight
}

/// The sessions of `users` on this shard.
fn sessions_of(hub: &Hub, users: &[protocol::UserId]) -> Vec<Rc<super::session::Session>> {
    let by_user = hub.by_user.borrow();
    let sessions = hub.sessions.borrow();
    users
        .iter()
        .filter_map(|u| by_user.get(u))
        .flatten()
        .filter_map(|c| sessions.get(c).cloned())
        .collect()
}

/// A connection handed over by another shard starts its session here.
fn attach(shard: &Rc<Shard>, h: Handoff) {
    let Handoff {
        conn,
        claims,
        encoding,
        ip,
    } = h;
    let (stream, leftover) = match conn.attach() {
        Ok(attached) => attached,
        Err(e) => {
            tracing::warn!(cause = %e, "cannot attach a handed-off connection");
            return;
        }
    };
    let Some(mut guard) = shard.admit() else {
        // At the connection limit: the 101 is out, so say it in a close frame.
        let mut out = Vec::new();
        crate::ws::write_close(&mut out, close::TRY_AGAIN_LATER, "connection limit reached");
        monoio::spawn(async move {
            use monoio::io::AsyncWriteRentExt;
            let mut stream = stream;
            let _ = stream.write_all(out).await;
        });
        return;
    };
    guard.ip = ip;
    let shard = shard.clone();
    monoio::spawn(super::session::run(
        shard, stream, leftover, guard, claims, encoding,
    ));
}

fn watch(hub: &Hub, target: protocol::UserId, watcher: Watcher) {
    hub.presence.borrow_mut().watch(target, watcher);
    let online = hub.by_user.borrow().contains_key(&target);
    let (status, last_seen): (_, Option<UnixMillis>) = if online {
        (protocol::PresenceStatus::Online, None)
    } else {
        let seen = hub.presence.borrow().last_seen(target);
        (protocol::PresenceStatus::Offline, seen)
    };
    let msg = ServerMsg::Presence {
        user: target,
        status,
        last_seen,
    };
    hub.reply(watcher.shard, watcher.conn, msg);
}

fn on_store(hub: &Hub, event: StoreEvent) {
    match event {
        StoreEvent::Written { ticket, ok } => on_written(hub, ticket, ok),
        StoreEvent::Loaded { conv, loaded } => {
            let loaded = loaded.unwrap_or_else(|e| {
                tracing::error!(cause = %e, conv = conv.0, "conversation load failed");
                None
            });
            hub.owner.borrow_mut().on_loaded(conv, loaded);
        }
        StoreEvent::Counted {
            conv,
            order,
            counts,
        } => {
            let counts = counts.unwrap_or_else(|e| {
                tracing::error!(cause = %e, conv = conv.0, "group count read failed");
                std::collections::HashMap::new()
            });
            hub.owner.borrow_mut().on_counted(conv, order, counts);
        }
        StoreEvent::PushDevices { devices } => super::notify::on_devices(hub, devices),
        StoreEvent::Looked { conv, key, found } => {
            let found = found.unwrap_or_else(|e| {
                tracing::error!(cause = %e, conv = conv.0, "dedupe lookup failed");
                None
            });
            hub.owner.borrow_mut().on_lookup(conv, key, found);
        }
        other => {
            hub.slots.release();
            on_session_event(hub, other);
        }
    }
}

fn on_written(hub: &Hub, ticket: u64, ok: bool) {
    match hub.take_ticket(ticket) {
        Some(Ticket::Append { conv, seq }) => hub.owner.borrow_mut().on_written(conv, seq, ok),
        Some(Ticket::Create { conv }) => hub.owner.borrow_mut().on_created(conv, ok),
        Some(Ticket::Cursors) => {
            hub.slots.release();
            hub.cursors.borrow_mut().set_in_flight(false);
        }
        Some(Ticket::Reply { conn, rid }) => {
            hub.slots.release();
            let msg = if ok {
                ServerMsg::Ok { rid }
            } else {
                error(Some(rid), None, ErrorCode::Internal, "write failed; retry")
            };
            hub.reply(hub.me, conn, msg);
        }
        Some(Ticket::Push { batch }) => super::notify::written(hub, batch, ok),
        Some(Ticket::PushRemoved) => {
            if let Some(n) = &hub.notify {
                n.slots.release();
            }
        }
        None => tracing::error!(ticket, "a write completion with no ticket"),
    }
}

fn on_session_event(hub: &Hub, event: StoreEvent) {
    let conn = match &event {
        StoreEvent::Convs { conn, .. }
        | StoreEvent::Page { conn, .. }
        | StoreEvent::Reply { conn, .. }
        | StoreEvent::Watchable { conn, .. } => *conn,
        _ => return,
    };
    let Some(s) = hub.sessions.borrow().get(&conn).cloned() else {
        return;
    };
    match event {
        StoreEvent::Convs {
            generation, list, ..
        } => match list {
            Ok(list) => s.on_catchup_result(hub, generation, |m| m.on_convs(list)),
            Err(e) => {
                tracing::error!(cause = %e, "conversation list read failed");
                s.close_with(close::INTERNAL_ERROR, "storage read failed");
            }
        },
        StoreEvent::Page {
            generation,
            conv,
            msgs,
            ..
        } => match msgs {
            Ok(msgs) => s.on_catchup_result(hub, generation, |m| m.on_page(conv, msgs)),
            Err(e) => {
                tracing::error!(cause = %e, "catch-up read failed");
                s.close_with(close::INTERNAL_ERROR, "storage read failed");
            }
        },
        StoreEvent::Reply { msg, .. } => s.push(&msg),
        StoreEvent::Watchable { rid, users, .. } => match users {
            Ok(users) => subscribe(hub, &s, rid, users),
            Err(e) => {
                tracing::error!(cause = %e, "presence check failed");
                s.push(&error(
                    Some(rid),
                    None,
                    ErrorCode::Internal,
                    "presence check failed",
                ));
            }
        },
        _ => {}
    }
}

/// Replaces what the session watches with `users` and answers `ok`.
fn subscribe(
    hub: &Hub,
    s: &super::session::Session,
    rid: protocol::RequestId,
    users: Vec<protocol::UserId>,
) {
    let watcher = Watcher {
        shard: hub.me,
        conn: s.id,
    };
    for target in s.replace_watching(users.clone()) {
        hub.forward(hub.home_of(target), ShardMsg::Unwatch { target, watcher });
    }
    s.push(&ServerMsg::Ok { rid });
    for target in users {
        hub.forward(hub.home_of(target), ShardMsg::Watch { target, watcher });
    }
}

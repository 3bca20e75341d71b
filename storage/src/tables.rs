//! The keyspaces of one database.

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::error::{Error, Result};

/// Which keyspace a staged write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Table {
    Convs,
    Messages,
    Members,
    UserConvs,
    Devices,
    Cursors,
    Dedupe,
    Outbox,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Convs => "convs",
            Table::Messages => "messages",
            Table::Members => "members",
            Table::UserConvs => "user_convs",
            Table::Devices => "devices",
            Table::Cursors => "cursors",
            Table::Dedupe => "dedupe",
            Table::Outbox => "outbox",
        }
    }
}

/// Handles to every keyspace; cheap to clone.
#[derive(Clone)]
pub(crate) struct Tables {
    pub(crate) db: Database,
    pub(crate) convs: Keyspace,
    pub(crate) messages: Keyspace,
    pub(crate) members: Keyspace,
    pub(crate) user_convs: Keyspace,
    pub(crate) devices: Keyspace,
    pub(crate) cursors: Keyspace,
    pub(crate) dedupe: Keyspace,
    pub(crate) outbox: Keyspace,
}

impl Tables {
    pub(crate) fn open(db: Database) -> Result<Tables> {
        let ks = |t: Table| {
            db.keyspace(t.name(), KeyspaceCreateOptions::default)
                .map_err(Error::fjall("open keyspace"))
        };
        Ok(Tables {
            convs: ks(Table::Convs)?,
            messages: ks(Table::Messages)?,
            members: ks(Table::Members)?,
            user_convs: ks(Table::UserConvs)?,
            devices: ks(Table::Devices)?,
            cursors: ks(Table::Cursors)?,
            dedupe: ks(Table::Dedupe)?,
            outbox: ks(Table::Outbox)?,
            db,
        })
    }

    pub(crate) fn get(&self, t: Table) -> &Keyspace {
        match t {
            Table::Convs => &self.convs,
            Table::Messages => &self.messages,
            Table::Members => &self.members,
            Table::UserConvs => &self.user_convs,
            Table::Devices => &self.devices,
            Table::Cursors => &self.cursors,
            Table::Dedupe => &self.dedupe,
            Table::Outbox => &self.outbox,
        }
    }
}

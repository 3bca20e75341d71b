//! Group rules, as pure functions: who may do what to a group, and what a
//! permitted operation changes (its events, its members, its title). The
//! owner applies the plan at the head of the conversation's queue, so a
//! group's changes and messages share one seq order.

use std::collections::{HashMap, HashSet};

use protocol::{ErrorCode, GroupEvent, Member, Role, Seq, UserId};

use super::{GroupOp, Meta, OwnerLimits};

/// What a permitted group operation does.
#[derive(Debug)]
pub(super) struct Plan {
    /// The events to append, in order (one, or two when a leave promotes).
    pub events: Vec<GroupEvent>,
    pub title: String,
    /// The members afterwards. New members carry `joined = Seq::ZERO` until
    /// the caller knows the event's seq ([`Plan::settle`]).
    pub members: Vec<Member>,
    /// Members whose record is written (new, or with a new role).
    pub put: Vec<UserId>,
    pub removed: Vec<UserId>,
    /// Answered with `ok` (a leave: the sender is no longer a member) rather
    /// than `conv`.
    pub answer_ok: bool,
    /// The new history visibility, if it changes.
    pub history_visible: Option<bool>,
    /// The new privacy, if it changes.
    pub private: Option<bool>,
}

impl Plan {
    /// Gives members added by this plan the seq of its first event.
    pub fn settle(&mut self, first: Seq) {
        for m in &mut self.members {
            if m.joined == Seq::ZERO {
                m.joined = first;
            }
        }
    }
}

/// Users among `users` that need a group count check (new to the group).
pub(super) fn newcomers(meta: Option<&Meta>, by: UserId, op: &GroupOp) -> Vec<UserId> {
    let present = |u: &UserId| meta.is_some_and(|m| m.is_member(*u));
    let mut seen = HashSet::new();
    let users: Box<dyn Iterator<Item = &UserId>> = match op {
        GroupOp::Create { members, .. } => Box::new(std::iter::once(&by).chain(members)),
        GroupOp::Add { users } => Box::new(users.iter()),
        _ => return Vec::new(),
    };
    users
        .filter(|u| !present(u) && seen.insert(**u))
        .copied()
        .collect()
}

/// Checks `op` by `by` against the group (`None`: it does not exist) and
/// plans it. `groups` holds how many groups each newcomer is in.
pub(super) fn plan(
    meta: Option<&Meta>,
    by: UserId,
    op: &GroupOp,
    limits: &OwnerLimits,
    groups: &HashMap<UserId, usize>,
) -> Result<Plan, ErrorCode> {
    let Some(meta) = meta else {
        return match op {
            GroupOp::Create { title, members } => create(by, title, members, limits, groups),
            _ => Err(ErrorCode::NotFound),
        };
    };
    if matches!(op, GroupOp::Create { .. }) {
        // A random group id that is already taken: the client retries.
        return Err(ErrorCode::Conflict);
    }
    if let GroupOp::SetPrivate { private } = op {
        return set_private(meta, by, *private);
    }
    if meta.kind != protocol::ConvKind::Group {
        return Err(ErrorCode::BadRequest);
    }
    let Some(me) = meta.members.iter().find(|m| m.user == by) else {
        return Err(ErrorCode::Forbidden);
    };
    let admin = me.role == Role::Admin;
    match op {
        GroupOp::Create { .. } => unreachable!("handled above"),
        GroupOp::Leave => Ok(leave(meta, by)),
        _ if !admin => Err(ErrorCode::Forbidden),
        GroupOp::Rename { title } => Ok(Plan {
            events: vec![GroupEvent::Renamed {
                title: title.clone(),
            }],
            title: title.clone(),
            ..unchanged(meta)
        }),
        GroupOp::Add { users } => add(meta, by, users, limits, groups),
        GroupOp::Remove { users } => remove(meta, users),
        GroupOp::SetRole { user, role } => set_role(meta, *user, *role),
        GroupOp::SetPrivate { .. } => unreachable!("handled above"),
        GroupOp::SetHistory { visible } => {
            if meta.history_visible == *visible {
                return Err(ErrorCode::Conflict);
            }
            Ok(Plan {
                events: vec![GroupEvent::HistoryVisible { visible: *visible }],
                history_visible: Some(*visible),
                ..unchanged(meta)
            })
        }
    }
}

/// A plan that changes nothing (the base of the small ones).
fn unchanged(meta: &Meta) -> Plan {
    Plan {
        events: Vec::new(),
        title: meta.title.clone(),
        members: meta.members.clone(),
        put: Vec::new(),
        removed: Vec::new(),
        answer_ok: false,
        history_visible: None,
        private: None,
    }
}

/// `conv_set_private`: a group's admins, or either side of a direct
/// conversation.
fn set_private(meta: &Meta, by: UserId, private: bool) -> Result<Plan, ErrorCode> {
    let Some(me) = meta.members.iter().find(|m| m.user == by) else {
        return Err(ErrorCode::Forbidden);
    };
    if meta.kind == protocol::ConvKind::Group && me.role != Role::Admin {
        return Err(ErrorCode::Forbidden);
    }
    if meta.private == private {
        return Err(ErrorCode::Conflict);
    }
    Ok(Plan {
        events: vec![GroupEvent::Private { private }],
        private: Some(private),
        ..unchanged(meta)
    })
}

fn check_groups(
    users: &[UserId],
    limits: &OwnerLimits,
    groups: &HashMap<UserId, usize>,
) -> Result<(), ErrorCode> {
    let full = |u: &UserId| groups.get(u).copied().unwrap_or(0) >= limits.groups_per_user_max;
    if users.iter().any(full) {
        return Err(ErrorCode::TooManyGroups);
    }
    Ok(())
}

fn create(
    by: UserId,
    title: &str,
    members: &[UserId],
    limits: &OwnerLimits,
    groups: &HashMap<UserId, usize>,
) -> Result<Plan, ErrorCode> {
    let mut seen = HashSet::from([by]);
    let others: Vec<UserId> = members
        .iter()
        .filter(|u| seen.insert(**u))
        .copied()
        .collect();
    if others.len() + 1 > limits.group_members_max {
        return Err(ErrorCode::GroupFull);
    }
    let everyone: Vec<UserId> = std::iter::once(by).chain(others.iter().copied()).collect();
    check_groups(&everyone, limits, groups)?;
    let member = |user, role| Member {
        user,
        role,
        joined: Seq::ZERO,
    };
    let list = std::iter::once(member(by, Role::Admin))
        .chain(others.iter().map(|&u| member(u, Role::Member)))
        .collect();
    Ok(Plan {
        events: vec![GroupEvent::Created {
            title: title.to_owned(),
            members: others,
        }],
        title: title.to_owned(),
        members: list,
        put: everyone,
        removed: Vec::new(),
        answer_ok: false,
        history_visible: None,
        private: None,
    })
}

fn add(
    meta: &Meta,
    by: UserId,
    users: &[UserId],
    limits: &OwnerLimits,
    groups: &HashMap<UserId, usize>,
) -> Result<Plan, ErrorCode> {
    let new = newcomers(
        Some(meta),
        by,
        &GroupOp::Add {
            users: users.to_vec(),
        },
    );
    if new.is_empty() {
        return Err(ErrorCode::Conflict);
    }
    if meta.members.len() + new.len() > limits.group_members_max {
        return Err(ErrorCode::GroupFull);
    }
    check_groups(&new, limits, groups)?;
    let mut members = meta.members.clone();
    members.extend(new.iter().map(|&user| Member {
        user,
        role: Role::Member,
        joined: Seq::ZERO,
    }));
    Ok(Plan {
        events: vec![GroupEvent::Added { users: new.clone() }],
        title: meta.title.clone(),
        members,
        put: new,
        removed: Vec::new(),
        answer_ok: false,
        history_visible: None,
        private: None,
    })
}

fn remove(meta: &Meta, users: &[UserId]) -> Result<Plan, ErrorCode> {
    let gone: HashSet<UserId> = users
        .iter()
        .copied()
        .filter(|u| meta.is_member(*u))
        .collect();
    if gone.is_empty() {
        return Err(ErrorCode::Conflict);
    }
    let members: Vec<Member> = meta
        .members
        .iter()
        .filter(|m| !gone.contains(&m.user))
        .copied()
        .collect();
    if !members.iter().any(|m| m.role == Role::Admin) {
        // Removing every admin would leave the group unmanageable.
        return Err(ErrorCode::Conflict);
    }
    let removed: Vec<UserId> = meta
        .members
        .iter()
        .map(|m| m.user)
        .filter(|u| gone.contains(u))
        .collect();
    Ok(Plan {
        events: vec![GroupEvent::Removed {
            users: removed.clone(),
        }],
        title: meta.title.clone(),
        members,
        put: Vec::new(),
        removed,
        answer_ok: false,
        history_visible: None,
        private: None,
    })
}

fn leave(meta: &Meta, by: UserId) -> Plan {
    let mut members: Vec<Member> = meta
        .members
        .iter()
        .filter(|m| m.user != by)
        .copied()
        .collect();
    let mut events = vec![GroupEvent::Left { user: by }];
    let mut put = Vec::new();
    if !members.is_empty() && !members.iter().any(|m| m.role == Role::Admin) {
        let oldest = members
            .iter_mut()
            .min_by_key(|m| (m.joined, m.user))
            .expect("not empty");
        oldest.role = Role::Admin;
        events.push(GroupEvent::RoleChanged {
            user: oldest.user,
            role: Role::Admin,
        });
        put.push(oldest.user);
    }
    Plan {
        events,
        title: meta.title.clone(),
        members,
        put,
        removed: vec![by],
        answer_ok: true,
        history_visible: None,
        private: None,
    }
}

fn set_role(meta: &Meta, user: UserId, role: Role) -> Result<Plan, ErrorCode> {
    let Some(target) = meta.members.iter().find(|m| m.user == user) else {
        return Err(ErrorCode::NotFound);
    };
    if target.role == role {
        return Err(ErrorCode::Conflict);
    }
    let admins = meta
        .members
        .iter()
        .filter(|m| m.role == Role::Admin)
        .count();
    if target.role == Role::Admin && admins == 1 {
        return Err(ErrorCode::Conflict);
    }
    let members = meta
        .members
        .iter()
        .map(|m| {
            if m.user == user {
                Member { role, ..*m }
            } else {
                *m
            }
        })
        .collect();
    Ok(Plan {
        events: vec![GroupEvent::RoleChanged { user, role }],
        title: meta.title.clone(),
        members,
        put: vec![user],
        removed: Vec::new(),
        answer_ok: false,
        history_visible: None,
        private: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protocol::{ConvKind, UnixMillis};

    use super::*;

    fn limits() -> OwnerLimits {
        OwnerLimits {
            group_members_max: 4,
            groups_per_user_max: 2,
            ..OwnerLimits::default()
        }
    }

    fn u(n: u64) -> UserId {
        UserId(n)
    }

    /// A group with admin 1 and members 2, 3 (joined 1, 5, 5).
    fn meta() -> Meta {
        let members = vec![
            Member {
                user: u(1),
                role: Role::Admin,
                joined: Seq(1),
            },
            Member {
                user: u(3),
                role: Role::Member,
                joined: Seq(5),
            },
            Member {
                user: u(2),
                role: Role::Member,
                joined: Seq(5),
            },
        ];
        Meta {
            kind: ConvKind::Group,
            title: "t".into(),
            participants: None,
            fanout: members.iter().map(|m| m.user).collect::<Arc<[_]>>(),
            members,
            creator: u(1),
            created: UnixMillis(0),
            history_visible: false,
            private: false,
        }
    }

    fn plan_of(m: Option<&Meta>, by: u64, op: &GroupOp) -> Result<Plan, ErrorCode> {
        plan(m, u(by), op, &limits(), &HashMap::new())
    }

    #[test]
    fn create_makes_the_creator_the_only_admin_and_dedupes_members() {
        let op = GroupOp::Create {
            title: "x".into(),
            members: vec![u(2), u(1), u(2), u(3)],
        };
        let mut p = plan_of(None, 1, &op).unwrap();
        p.settle(Seq(1));
        let roles: Vec<_> = p
            .members
            .iter()
            .map(|m| (m.user.0, m.role, m.joined))
            .collect();
        assert_eq!(
            roles,
            [
                (1, Role::Admin, Seq(1)),
                (2, Role::Member, Seq(1)),
                (3, Role::Member, Seq(1))
            ]
        );
        assert_eq!(
            p.events,
            [GroupEvent::Created {
                title: "x".into(),
                members: vec![u(2), u(3)]
            }]
        );
        assert_eq!(p.put, [u(1), u(2), u(3)]);
    }

    #[test]
    fn limits_give_group_full_and_too_many_groups() {
        let big = GroupOp::Create {
            title: String::new(),
            members: (2..=5).map(u).collect(),
        };
        assert_eq!(plan_of(None, 1, &big).unwrap_err(), ErrorCode::GroupFull);
        let op = GroupOp::Add { users: vec![u(7)] };
        let counts = HashMap::from([(u(7), 2)]);
        let err = plan(Some(&meta()), u(1), &op, &limits(), &counts).unwrap_err();
        assert_eq!(err, ErrorCode::TooManyGroups);
        let two = GroupOp::Add {
            users: vec![u(7), u(8)],
        };
        assert_eq!(
            plan_of(Some(&meta()), 1, &two).unwrap_err(),
            ErrorCode::GroupFull
        );
    }

    #[test]
    fn only_admins_manage_and_only_members_act() {
        let rename = GroupOp::Rename { title: "y".into() };
        assert_eq!(
            plan_of(Some(&meta()), 2, &rename).unwrap_err(),
            ErrorCode::Forbidden
        );
        assert_eq!(
            plan_of(Some(&meta()), 9, &GroupOp::Leave).unwrap_err(),
            ErrorCode::Forbidden
        );
        assert_eq!(plan_of(None, 1, &rename).unwrap_err(), ErrorCode::NotFound);
        assert!(plan_of(Some(&meta()), 1, &rename).is_ok());
        assert!(plan_of(Some(&meta()), 2, &GroupOp::Leave).is_ok());
    }

    #[test]
    fn add_and_remove_need_a_change_and_keep_an_admin() {
        let add_existing = GroupOp::Add { users: vec![u(2)] };
        assert_eq!(
            plan_of(Some(&meta()), 1, &add_existing).unwrap_err(),
            ErrorCode::Conflict
        );
        let remove_stranger = GroupOp::Remove { users: vec![u(9)] };
        assert_eq!(
            plan_of(Some(&meta()), 1, &remove_stranger).unwrap_err(),
            ErrorCode::Conflict
        );
        let remove_admin = GroupOp::Remove { users: vec![u(1)] };
        assert_eq!(
            plan_of(Some(&meta()), 1, &remove_admin).unwrap_err(),
            ErrorCode::Conflict
        );
        let p = plan_of(
            Some(&meta()),
            1,
            &GroupOp::Remove {
                users: vec![u(2), u(9)],
            },
        )
        .unwrap();
        assert_eq!(p.removed, [u(2)]);
        assert_eq!(p.events, [GroupEvent::Removed { users: vec![u(2)] }]);
    }

    #[test]
    fn the_last_admin_leaving_promotes_the_oldest_member() {
        let p = plan_of(Some(&meta()), 1, &GroupOp::Leave).unwrap();
        // Members 2 and 3 joined at the same seq: the lower id is older.
        assert_eq!(
            p.events,
            [
                GroupEvent::Left { user: u(1) },
                GroupEvent::RoleChanged {
                    user: u(2),
                    role: Role::Admin
                }
            ]
        );
        assert!(p.answer_ok);
        assert_eq!(p.put, [u(2)]);
        // A member leaving promotes nobody.
        let p = plan_of(Some(&meta()), 3, &GroupOp::Leave).unwrap();
        assert_eq!(p.events, [GroupEvent::Left { user: u(3) }]);
    }

    #[test]
    fn set_role_rules() {
        let promote = GroupOp::SetRole {
            user: u(2),
            role: Role::Admin,
        };
        assert!(plan_of(Some(&meta()), 1, &promote).is_ok());
        let demote_last = GroupOp::SetRole {
            user: u(1),
            role: Role::Member,
        };
        assert_eq!(
            plan_of(Some(&meta()), 1, &demote_last).unwrap_err(),
            ErrorCode::Conflict
        );
        let same = GroupOp::SetRole {
            user: u(2),
            role: Role::Member,
        };
        assert_eq!(
            plan_of(Some(&meta()), 1, &same).unwrap_err(),
            ErrorCode::Conflict
        );
        let stranger = GroupOp::SetRole {
            user: u(9),
            role: Role::Admin,
        };
        assert_eq!(
            plan_of(Some(&meta()), 1, &stranger).unwrap_err(),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn privacy_is_set_by_group_admins_or_either_side_of_a_direct_conversation() {
        let hide = GroupOp::SetPrivate { private: true };
        let p = plan_of(Some(&meta()), 1, &hide).unwrap();
        assert_eq!(p.private, Some(true));
        assert_eq!(p.events, [GroupEvent::Private { private: true }]);
        assert_eq!(
            plan_of(Some(&meta()), 2, &hide).unwrap_err(),
            ErrorCode::Forbidden
        );
        assert_eq!(
            plan_of(Some(&meta()), 9, &hide).unwrap_err(),
            ErrorCode::Forbidden
        );
        let mut direct = meta();
        direct.kind = ConvKind::Direct;
        assert_eq!(
            plan_of(Some(&direct), 2, &hide).unwrap().private,
            Some(true)
        );
        direct.private = true;
        assert_eq!(
            plan_of(Some(&direct), 2, &hide).unwrap_err(),
            ErrorCode::Conflict
        );
        let show = GroupOp::SetPrivate { private: false };
        assert_eq!(
            plan_of(Some(&direct), 3, &show).unwrap().private,
            Some(false)
        );
        assert_eq!(
            plan_of(Some(&direct), 2, &GroupOp::Rename { title: "x".into() }).unwrap_err(),
            ErrorCode::BadRequest,
            "other group operations stay group-only"
        );
    }

    #[test]
    fn history_visibility_is_an_admin_change_that_must_change() {
        let show = GroupOp::SetHistory { visible: true };
        assert_eq!(
            plan_of(Some(&meta()), 2, &show).unwrap_err(),
            ErrorCode::Forbidden
        );
        let p = plan_of(Some(&meta()), 1, &show).unwrap();
        assert_eq!(p.history_visible, Some(true));
        assert_eq!(p.events, [GroupEvent::HistoryVisible { visible: true }]);
        let hide = GroupOp::SetHistory { visible: false };
        assert_eq!(
            plan_of(Some(&meta()), 1, &hide).unwrap_err(),
            ErrorCode::Conflict
        );
    }
}

//! The request's state machine as pure functions: what a click, an extension or a revoke does,
//! given the facts the service read (some of them under the request's row lock).
//!
//! Nothing here touches the database, the clock or a chat platform, and nothing here words a
//! message: the service gathers the facts, calls these functions, persists what they return in one
//! transaction and words the reply. Who may act at all is [`crate::policy`]'s question; this module
//! only answers what an allowed action does. Each function has a table test, one row per case.

use crate::chat::Decision;
use crate::domain::Status;
use crate::policy::Target;

/// The status in which a round is decided: round 0 decides a pending request, every later round
/// decides an extension of an active grant.
pub fn open_status(round: i64) -> Status {
    if round == 0 {
        Status::Pending
    } else {
        Status::Active
    }
}

/// May a vote still be recorded in `round`?
///
/// `round_locked` is the outcome of the compare-and-swap on (status, round) (`Tx::lock_round`):
/// false when the request left [`open_status`] or moved to a newer round, so a stale button cannot
/// decide a newer extension. An extension round also needs an extension still waiting: a decided
/// extension keeps its round number, only its `extension_ms` is cleared.
pub fn accepts_votes(round_locked: bool, round: i64, extension_pending: bool) -> bool {
    round_locked && (round == 0 || extension_pending)
}

/// Everything a click's outcome depends on, read by the service in its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ballot {
    pub decision: Decision,
    /// The round the button belongs to (0: the request, 1…: extensions).
    pub round: i64,
    /// [`accepts_votes`] said yes.
    pub open: bool,
    /// This approver's decision was inserted; false when they had already decided this round.
    pub first_vote: bool,
    /// Approvals in this round, this one included (counted only for a first approval).
    pub approvals: i64,
    pub approvals_required: i64,
    /// The grant's current expiry (extension rounds).
    pub expires_at: Option<i64>,
    /// The extension being decided (extension rounds).
    pub extension_ms: Option<i64>,
    /// Unix ms, for the new expiry of an approved extension.
    pub now: i64,
}

/// What a click does. Named after what happens to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// The round is no longer open (decided, expired, cancelled or superseded): nothing changes.
    RoundClosed,
    /// This approver already decided this round: the first decision stands.
    AlreadyVoted,
    /// A deny in round 0: the request is denied and nothing is opened.
    Denied,
    /// A deny in an extension round: the extension is dropped, the grant keeps its expiry.
    ExtensionDenied,
    /// An approval that does not reach the threshold yet.
    NeedsMore { have: i64, need: i64 },
    /// The approval that reaches the threshold in round 0: the request is approved, the rule opens.
    Approved { approvals: i64 },
    /// The approval that reaches the threshold in an extension round: the grant stays open longer.
    Extended { new_expiry: i64, extension_ms: i64 },
}

/// The outcome of a click.
///
/// One deny is enough to end a round (any approver may stop access); approvals count up to the
/// target's `approvals_required`, so several people must agree before a rule opens or stays open.
pub fn decide(b: &Ballot) -> Decided {
    if !b.open {
        return Decided::RoundClosed;
    }
    if !b.first_vote {
        return Decided::AlreadyVoted;
    }
    match (b.decision, b.round) {
        (Decision::Deny, 0) => Decided::Denied,
        (Decision::Deny, _) => Decided::ExtensionDenied,
        (Decision::Approve, _) if b.approvals < b.approvals_required => Decided::NeedsMore {
            have: b.approvals,
            need: b.approvals_required,
        },
        (Decision::Approve, 0) => Decided::Approved {
            approvals: b.approvals,
        },
        (Decision::Approve, _) => {
            let extension_ms = b.extension_ms.unwrap_or(0);
            Decided::Extended {
                new_expiry: extended_expiry(b.expires_at, b.now, extension_ms),
                extension_ms,
            }
        }
    }
}

/// The expiry after adding `extension_ms`: counted from the current expiry, or from now when that
/// has already passed (a grant whose revoke is due must not get less than it was given).
pub fn extended_expiry(expires_at: Option<i64>, now: i64, extension_ms: i64) -> i64 {
    expires_at.unwrap_or(now).max(now) + extension_ms
}

/// What `/jit extend` is asked to do, as read before any write.
#[derive(Debug, Clone, Copy)]
pub struct ExtensionAsk<'a> {
    /// The person asking is the request's requester.
    pub by_requester: bool,
    pub status: Status,
    /// An extension of this grant is already waiting for approval.
    pub extension_pending: bool,
    /// The request's target in the current policy (`None`: removed since).
    pub target: Option<&'a Target>,
    pub expires_at: Option<i64>,
    /// The extra time asked for.
    pub extra_ms: i64,
    /// Unix ms.
    pub now: i64,
}

/// What `/jit extend` does, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionPlan<'a> {
    /// Only the requester extends their own grant; approvers decide extensions, they do not ask
    /// for them.
    NotTheRequester,
    /// Only an open (active) grant has an expiry to move.
    NotActive,
    /// One extension round at a time: a second would supersede the first's buttons.
    AlreadyPending,
    /// The target left the policy: nobody knows its limits or approvers any more.
    TargetGone,
    /// The grant would stay open longer from now than the target's `max_duration` allows.
    OverMax {
        target: &'a Target,
        open_for_ms: i64,
    },
    /// The target sets `extend_without_approval`: the expiry moves now.
    WithoutApproval { new_expiry: i64 },
    /// The approvers decide, in a new round on the same card: an extension is more access, so it
    /// needs approval again, by the same rules as the request. Undecided by `pending_until`, it
    /// lapses and the grant closes at its current expiry.
    NeedsApproval {
        target: &'a Target,
        pending_until: i64,
    },
}

/// Decides what `/jit extend` does.
pub fn plan_extension<'a>(ask: &ExtensionAsk<'a>) -> ExtensionPlan<'a> {
    if !ask.by_requester {
        return ExtensionPlan::NotTheRequester;
    }
    if ask.status != Status::Active {
        return ExtensionPlan::NotActive;
    }
    if ask.extension_pending {
        return ExtensionPlan::AlreadyPending;
    }
    let Some(target) = ask.target else {
        return ExtensionPlan::TargetGone;
    };
    let new_expiry = extended_expiry(ask.expires_at, ask.now, ask.extra_ms);
    // The limit is on how long the rule stays open from now, not on the sum of all extensions:
    // a grant may be extended again and again, but never be open longer ahead than one request.
    if new_expiry - ask.now > target.max_duration.as_millis() {
        return ExtensionPlan::OverMax {
            target,
            open_for_ms: new_expiry - ask.now,
        };
    }
    if target.extend_without_approval {
        ExtensionPlan::WithoutApproval { new_expiry }
    } else {
        ExtensionPlan::NeedsApproval {
            target,
            pending_until: ask.now + target.pending_ttl.as_millis(),
        }
    }
}

/// What `/jit revoke` does with a request in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokePlan {
    /// Pending: nothing was opened, so the request is simply cancelled.
    Cancel,
    /// Active: the rule is closed early by a revoke job.
    CloseEarly,
    /// Approved or applying: the apply job owns the request until the rule is live (there is no
    /// compare-and-swap from these statuses to revoking), so the person is asked to try again.
    NotYet,
    /// Already closing or closed.
    NothingToDo,
}

/// Decides what `/jit revoke` does.
pub fn plan_revoke(status: Status) -> RevokePlan {
    match status {
        Status::Pending => RevokePlan::Cancel,
        Status::Active => RevokePlan::CloseEarly,
        Status::Approved | Status::Applying => RevokePlan::NotYet,
        Status::Revoking
        | Status::Revoked
        | Status::Denied
        | Status::Expired
        | Status::Cancelled
        | Status::Failed => RevokePlan::NothingToDo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GrantDuration;
    use crate::policy::fixtures;

    const NOW: i64 = 1_000_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn open_status_is_pending_for_the_request_and_active_for_extensions() {
        for (round, want) in [
            (0, Status::Pending),
            (1, Status::Active),
            (7, Status::Active),
        ] {
            assert_eq!(open_status(round), want, "round {round}");
        }
    }

    #[test]
    fn accepts_votes_needs_the_lock_and_a_waiting_extension() {
        // (round_locked, round, extension_pending, accepted)
        let rows = [
            (true, 0, false, true),
            (true, 0, true, true),
            (false, 0, false, false),
            (true, 1, true, true),
            (true, 1, false, false),
            (false, 1, true, false),
            (false, 2, false, false),
        ];
        for (locked, round, pending, want) in rows {
            assert_eq!(
                accepts_votes(locked, round, pending),
                want,
                "locked={locked} round={round} pending={pending}"
            );
        }
    }

    fn ballot(decision: Decision, round: i64, approvals: i64, required: i64) -> Ballot {
        Ballot {
            decision,
            round,
            open: true,
            first_vote: true,
            approvals,
            approvals_required: required,
            expires_at: Some(NOW + HOUR),
            extension_ms: (round > 0).then_some(HOUR),
            now: NOW,
        }
    }

    #[test]
    fn decide_table() {
        use Decision::{Approve, Deny};
        let closed = Ballot {
            open: false,
            ..ballot(Approve, 0, 1, 1)
        };
        let again = Ballot {
            first_vote: false,
            ..ballot(Approve, 0, 1, 1)
        };
        let closed_and_again = Ballot {
            open: false,
            first_vote: false,
            ..ballot(Deny, 0, 0, 1)
        };
        let past_expiry = Ballot {
            expires_at: Some(NOW - 10),
            ..ballot(Approve, 1, 1, 1)
        };
        let no_expiry = Ballot {
            expires_at: None,
            ..ballot(Approve, 2, 2, 2)
        };
        let rows: [(&str, Ballot, Decided); 12] = [
            ("round closed", closed, Decided::RoundClosed),
            (
                "closed wins over a repeat",
                closed_and_again,
                Decided::RoundClosed,
            ),
            ("second click of one approver", again, Decided::AlreadyVoted),
            ("deny in round 0", ballot(Deny, 0, 0, 2), Decided::Denied),
            (
                "deny after an approval",
                ballot(Deny, 0, 1, 2),
                Decided::Denied,
            ),
            (
                "deny of an extension",
                ballot(Deny, 1, 0, 1),
                Decided::ExtensionDenied,
            ),
            (
                "first of two approvals",
                ballot(Approve, 0, 1, 2),
                Decided::NeedsMore { have: 1, need: 2 },
            ),
            (
                "first of two extension approvals",
                ballot(Approve, 3, 1, 2),
                Decided::NeedsMore { have: 1, need: 2 },
            ),
            (
                "threshold reached",
                ballot(Approve, 0, 2, 2),
                Decided::Approved { approvals: 2 },
            ),
            (
                "extension threshold reached",
                ballot(Approve, 1, 1, 1),
                Decided::Extended {
                    new_expiry: NOW + 2 * HOUR,
                    extension_ms: HOUR,
                },
            ),
            (
                "extension of a grant past its expiry counts from now",
                past_expiry,
                Decided::Extended {
                    new_expiry: NOW + HOUR,
                    extension_ms: HOUR,
                },
            ),
            (
                "extension without a recorded expiry counts from now",
                no_expiry,
                Decided::Extended {
                    new_expiry: NOW + HOUR,
                    extension_ms: HOUR,
                },
            ),
        ];
        for (case, b, want) in rows {
            assert_eq!(decide(&b), want, "{case}");
        }
    }

    #[test]
    fn extended_expiry_table() {
        // (expires_at, extension_ms, want)
        for (expires_at, ext, want) in [
            (Some(NOW + HOUR), HOUR, NOW + 2 * HOUR),
            (Some(NOW - HOUR), HOUR, NOW + HOUR),
            (Some(NOW), HOUR, NOW + HOUR),
            (None, HOUR, NOW + HOUR),
            (Some(NOW + HOUR), 0, NOW + HOUR),
        ] {
            assert_eq!(
                extended_expiry(expires_at, NOW, ext),
                want,
                "{expires_at:?}"
            );
        }
    }

    #[test]
    fn plan_extension_table() {
        let mut target = fixtures::target("web1");
        target.max_duration = GrantDuration::from_secs(4 * 3600);
        target.pending_ttl = GrantDuration::from_secs(900);
        let mut direct = target.clone();
        direct.extend_without_approval = true;
        let ask = ExtensionAsk {
            by_requester: true,
            status: Status::Active,
            extension_pending: false,
            target: Some(&target),
            expires_at: Some(NOW + HOUR),
            extra_ms: HOUR,
            now: NOW,
        };
        let rows: [(&str, ExtensionAsk, ExtensionPlan); 11] = [
            (
                "an approver is not the requester",
                ExtensionAsk {
                    by_requester: false,
                    ..ask
                },
                ExtensionPlan::NotTheRequester,
            ),
            (
                "not the requester wins over a closed grant",
                ExtensionAsk {
                    by_requester: false,
                    status: Status::Revoked,
                    ..ask
                },
                ExtensionPlan::NotTheRequester,
            ),
            (
                "pending request",
                ExtensionAsk {
                    status: Status::Pending,
                    ..ask
                },
                ExtensionPlan::NotActive,
            ),
            (
                "revoked grant",
                ExtensionAsk {
                    status: Status::Revoked,
                    ..ask
                },
                ExtensionPlan::NotActive,
            ),
            (
                "extension already waiting",
                ExtensionAsk {
                    extension_pending: true,
                    ..ask
                },
                ExtensionPlan::AlreadyPending,
            ),
            (
                "target left the policy",
                ExtensionAsk {
                    target: None,
                    ..ask
                },
                ExtensionPlan::TargetGone,
            ),
            (
                "over the maximum from now",
                ExtensionAsk {
                    extra_ms: 3 * HOUR + 1,
                    ..ask
                },
                ExtensionPlan::OverMax {
                    target: &target,
                    open_for_ms: 4 * HOUR + 1,
                },
            ),
            (
                "exactly the maximum from now",
                ExtensionAsk {
                    extra_ms: 3 * HOUR,
                    ..ask
                },
                ExtensionPlan::NeedsApproval {
                    target: &target,
                    pending_until: NOW + 900_000,
                },
            ),
            (
                "needs approval",
                ask,
                ExtensionPlan::NeedsApproval {
                    target: &target,
                    pending_until: NOW + 900_000,
                },
            ),
            (
                "without approval",
                ExtensionAsk {
                    target: Some(&direct),
                    ..ask
                },
                ExtensionPlan::WithoutApproval {
                    new_expiry: NOW + 2 * HOUR,
                },
            ),
            (
                "without approval after the expiry passed counts from now",
                ExtensionAsk {
                    target: Some(&direct),
                    expires_at: Some(NOW - HOUR),
                    ..ask
                },
                ExtensionPlan::WithoutApproval {
                    new_expiry: NOW + HOUR,
                },
            ),
        ];
        for (case, ask, want) in rows {
            assert_eq!(plan_extension(&ask), want, "{case}");
        }
    }

    #[test]
    fn plan_revoke_covers_every_status() {
        for status in Status::ALL {
            let want = match status.as_str() {
                "pending" => RevokePlan::Cancel,
                "active" => RevokePlan::CloseEarly,
                "approved" | "applying" => RevokePlan::NotYet,
                _ => RevokePlan::NothingToDo,
            };
            assert_eq!(plan_revoke(status), want, "{status}");
        }
    }
}

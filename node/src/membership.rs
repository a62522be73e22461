//! Membership changes of one shard, run on its leader: add a learner (returns
//! once it caught up), set the voters (openraft runs joint consensus), remove
//! learners, or just report the membership. The placement driver calls these through
//! `Admin.ChangeMembership`.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use ringkv_proto::v1::{ChangeMembershipRequest, ChangeMembershipResponse};

use crate::error::Error;
use crate::raft_types::NodeId;
use crate::shard::Shard;

/// Longest `add_learner` may wait for the learner to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Applies `req` to `shard` (whose replica here leads) and reports the result.
pub async fn change(shard: &Shard, req: ChangeMembershipRequest) -> Result<ChangeMembershipResponse, Error> {
    if let Some(learner) = req.add_learner {
        if learner.id == 0 || learner.addr.is_empty() {
            return Err(Error::InvalidArgument("a learner needs an id above 0 and an address".into()));
        }
        let add = shard.raft.add_learner(learner.id, BasicNode { addr: learner.addr }, true);
        tokio::time::timeout(CATCH_UP_TIMEOUT, add)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "shard {}: learner {} did not catch up within {CATCH_UP_TIMEOUT:?}",
                    shard.id, learner.id
                ))
            })?
            .map_err(|e| membership_error(shard, e))?;
    }
    if !req.set_voters.is_empty() {
        if req.set_voters.contains(&0) {
            return Err(Error::InvalidArgument("voter ids must be above 0".into()));
        }
        let voters: BTreeSet<NodeId> = req.set_voters.iter().copied().collect();
        shard.raft.change_membership(voters, false).await.map_err(|e| membership_error(shard, e))?;
    }
    if !req.remove_learners.is_empty() {
        let remove: BTreeSet<NodeId> = req.remove_learners.iter().copied().collect();
        let current = shard.raft.metrics().borrow().membership_config.membership().clone();
        if let Some(voter) = current.voter_ids().find(|id| remove.contains(id)) {
            return Err(Error::FailedPrecondition(format!(
                "shard {}: node {voter} is a voter; only learners can be removed this way",
                shard.id
            )));
        }
        // `change_membership(voters, false)` keeps learners that are not voters;
        // only removing the nodes themselves drops them.
        let present: BTreeSet<NodeId> =
            remove.into_iter().filter(|id| current.get_node(id).is_some()).collect();
        if !present.is_empty() {
            shard
                .raft
                .change_membership(ChangeMembers::RemoveNodes(present), false)
                .await
                .map_err(|e| membership_error(shard, e))?;
        }
    }
    let metrics = shard.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners = membership.learner_ids().filter(|id| !voters.contains(id)).collect();
    let mut matched: std::collections::HashMap<NodeId, u64> = metrics
        .replication
        .iter()
        .flatten()
        .map(|(&id, log)| (id, log.as_ref().map_or(0, |l| l.index)))
        .collect();
    matched.insert(metrics.id, metrics.last_log_index.unwrap_or(0));
    Ok(ChangeMembershipResponse {
        voters: voters.into_iter().collect(),
        learners,
        leader_id: metrics.current_leader.unwrap_or(0),
        approx_bytes: shard.approx_bytes(),
        matched,
    })
}

fn membership_error(shard: &Shard, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => shard.not_leader(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(
            e,
        ))) => {
            Error::Unavailable(format!("shard {}: another membership change is in progress: {e}", shard.id))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::FailedPrecondition(format!("shard {}: {e}", shard.id))
        }
        RaftError::Fatal(f) => Error::Unavailable(format!("shard {} replica stopped: {f}", shard.id)),
    }
}

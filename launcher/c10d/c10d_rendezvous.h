// ddprun's c10d rendezvous backend: the nodes of a job meet in c10d's TCPStore at the
// endpoint, and each round of the rendezvous gives every member its node rank, the world
// size and the master's address. Built into libddprun_rdzv_c10d.so, which ddprun loads only
// for --rdzv-backend c10d (Note [The c10d rendezvous is a module] in
// launcher/node_rendezvous.h).
//
// Note [The c10d rendezvous protocol]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Every piece of state lives in the store under /ddprun/rdzv/<run id>/, so two jobs on one
// endpoint never meet, and no agent holds state the others need (the host's agent only
// serves the store):
//   node_ids             counter; a node's id is "node<N>" from one add()
//   hb/<node id>         the node's heartbeat: a counter its agent adds 1 to every
//                        keep_alive_interval, from a thread of its own
//   round_hint           the lowest round that may still be open (a hint: joiners skip
//                        closed rounds from there)
//   r<R>/joined          counter: add() gives a joiner its arrival index in round R
//   r<R>/node/<index>    "<node id> <address> <local workers>" of that arrival
//   r<R>/closed          the number of admitted arrivals, set once with compareSet("", n)
//   r<R>/master          "<address> <port>" chosen by node rank 0 of round R
//   r<R>/done            counter: members whose workers finished
//   closed               the job failed (a reason): nobody joins again, the others stop
//   finished             a member's workers succeeded: nobody joins again, and the others
//                        no longer re-form (they are finishing too)
// A round closes when MAX nodes joined (at once), or when at least MIN joined and no one
// else arrived for last_call_timeout. Any member may close it: compareSet makes the first
// count written the only one, and arrivals at or after that index are not admitted: they
// join round R+1 and wait there. Node ranks follow the arrival order. While round R runs
// with MAX nodes, the nodes in R+1 are spares (torchelastic's redundancy list): R+1 does
// not close and the members do not re-form for them until a member of R comes to R+1
// (its workers failed, or it saw a member's heartbeat stop); without this a job with more
// than MAX nodes re-formed forever, and spares formed a second job beside it.
// While workers run, each agent's monitor checks (by its own clock, no clock is shared):
// someone joined round R+1 (a waiting node below MAX: grow), a member's heartbeat counter has not
// moved for keep_alive_interval x keep_alive_max_attempt (a dead node: shrink), or the job
// was closed. Any of these stops the workers and the agent joins round R+1.
//
// Compared with torchelastic's dynamic rendezvous (dynamic_rendezvous.py): there the whole
// state (participants, wait list, last heartbeats, the closed flag) is one pickled blob
// that every agent reads, changes and writes back with compareSet, retrying on conflict,
// and heartbeats are wall-clock timestamps in that blob, compared across machines. Here
// each fact is its own key changed by one atomic add() or compareSet(), so a join is two
// store operations with no retry loop, nothing is lost to a conflicting write, and a dead
// node is recognised by a counter that stopped, on the watcher's own clock (no clock skew).
// What it gives up: torchelastic's rank order by node address; ranks here follow the
// arrival order. As with torchelastic's c10d backend, the store lives in
// the host's agent: the host node's death ends the job.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <c10/util/intrusive_ptr.h>

#include "launcher/node_rendezvous.h"

namespace c10d {
class Store;
}

namespace ddp::launcher {

class C10dRendezvous : public NodeRendezvous {
 public:
  // `store` is connected (or hosted, `hosting`); `address` is this node's, published to the
  // others when it is node rank 0. Starts the heartbeat thread.
  C10dRendezvous(RendezvousConfig config, c10::intrusive_ptr<c10d::Store> store,
                 std::string address, bool hosting);
  ~C10dRendezvous() override;

  std::string nodeId() const override { return nodeId_; }
  RendezvousRound nextRound() override;
  std::string membershipChange() override;
  void finish(bool succeeded, const std::string& reason) override;

  // Connects to the store at the endpoint, or hosts it (is_host, or the endpoint is this
  // host's address and its port is free). Throws RendezvousFailed.
  static std::unique_ptr<C10dRendezvous> connect(const RendezvousConfig& config);

 private:
  std::string key(const std::string& name) const;
  std::string roundKey(int round, const std::string& name) const;
  std::optional<std::string> tryGet(const std::string& key);
  void heartbeatLoop();
  // Whether round - 1 runs with MAX nodes and none of its members is among the first
  // `joined` arrivals of `round`: those are spares, as in torchelastic's redundancy list; they
  // neither close `round` into a second job nor make the members re-form.
  bool previousRoundRunsFull(int round, int joined);
  // Throws RendezvousFailed once another node closed the job or finished it (leaving the
  // round first, so that the host stops waiting for this node).
  void stopIfTheJobEnded();
  // Counts this node as done in its round (the host stops waiting for it) and forgets it.
  void leaveRound();
  // Turns a store error into RendezvousFailed: the host node is gone (or unreachable).
  [[noreturn]] void storeLost(const std::string& during, const std::string& what) const;

  const RendezvousConfig config_;
  c10::intrusive_ptr<c10d::Store> store_;
  const std::string address_;
  const bool hosting_;
  std::string nodeId_;
  // The last closed round this node is in, and what the monitor has seen of its members'
  // heartbeats: node id -> (counter, when it last moved on our clock).
  std::optional<RendezvousRound> current_;
  std::map<std::string, std::pair<int64_t, std::chrono::steady_clock::time_point>> heartbeats_;
  bool finishedSeen_ = false;  // a member succeeded: this node never re-forms again
  // The heartbeat thread's own connection (a TCPStore client is one socket).
  c10::intrusive_ptr<c10d::Store> heartbeatStore_;
  std::atomic<bool> stopping_{false};
  std::thread heartbeatThread_;
};

}  // namespace ddp::launcher

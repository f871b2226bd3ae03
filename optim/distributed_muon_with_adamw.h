// distributed_muon_with_adamw.h: MuonWithAdamW over data-parallel ranks, ZeRO-1 style, in the
// owner-aligned shard layout (layout A of distributed.md; see owner_plan.h):
//   1. every rank copies its gradients into a flat W x S buffer laid out by the owner plan;
//   2. one reduce-scatter (avg) hands each rank the averaged gradients of its shard, i.e. the
//      whole gradient of every Muon matrix it owns plus a run of AdamW elements;
//   3. the owner runs Muon on its matrices (momentum only there; same-shape parts in one batched
//      NS call; per-part shape scale) and AdamW on its element run (moments only there);
//   4. one all-gather of the parameter shards gives every rank every updated parameter, bitwise equal.
// Traffic per step is ZeRO-1 AdamW's (reduce-scatter + all-gather of W x S elements) plus the
// padding W x S - P and one all_reduce of a per-parameter "has a gradient" flag. Steps 2 and 4 can
// run in overlapped buckets (set_bucket_bytes, shard_buckets.h): the buffers are then bucket-major,
// and bucket k's all-gather travels while later buckets' Newton-Schulz runs. The reduce-scatters can
// start during backward (begin_backward_reduction, gradient_ready), each bucket once its gradients are final.
// Layout A was chosen because it moves no bytes beyond ZeRO-1 while the largest Muon matrix is below
// P / W; where it is not (see OwnerPlan::padding_ratio), the element-wise layout B is the answer.
//
// With tensor parallelism (TensorParallelContext) the parameters are TP pieces and the plan is a
// GridPlan (grid_plan.h): steps 1, 2 and 4 run over the pieces within each data-parallel group; in
// step 3 a Muon parameter whose split parts are not whole inside one piece travels to its TP owner:
// one all-to-all over the TP group carries every piece's averaged gradient and value to the owner,
// which keeps the logical momentum, runs Muon on the logical matrix exactly as the single-process
// container does, and a second all-to-all returns the updated pieces.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "optim/grid_plan.h"
#include "optim/muon_batch.h"
#include "optim/optimizer.h"
#include "optim/owner_plan.h"
#include "optim/shard_buckets.h"
#include "optim/split_registry.h"
#include "parallel/communicator.h"

namespace orthotron {

/// The tensor-parallel side of a grid: the TP communicator (null: no tensor parallelism) and how the
/// model cut each parameter. Every TP rank's parameters are its pieces (tp_layout.h).
struct TensorParallelContext {
  Communicator* comm = nullptr;
  TensorParallelLayout layout;
  int size() const { return comm == nullptr ? 1 : comm->size(); }
  int rank() const { return comm == nullptr ? 0 : comm->rank(); }
};

/// An uneven all-to-all in flight (layout B's gather-to-owner and scatter-back, the TP exchange):
/// the buffers it reads and writes, kept alive until `work` is waited on, and where each source
/// rank's block starts in `recv`.
struct PostedExchange {
  WorkPtr work;
  at::Tensor send, recv;
  std::vector<int64_t> offset;
};

class DistributedMuonWithAdamW : public Optimizer {
 public:
  /// Collective over `dp`: every data-parallel rank must construct it with the same parameter
  /// names, shapes and dtypes, groups, rules and splits. Each rank computes the owner plan and the
  /// ranks compare its hash (CommError naming the ranks on a mismatch; never a hang). Parameters
  /// must all share one dtype and device (dp's device). At the end the parameters are synchronized
  /// from their shards, so every rank starts bitwise equal. `dp` must outlive the optimizer.
  /// With `tp` (a TP size above 1) the parameters are this TP rank's pieces; names, routing and the
  /// splits are those of the logical parameters (tp_logical_shape), and the constructor is collective
  /// over the TP group too (the grid plan's hash is compared there as well). Every rank of the grid
  /// must then call step(), state_dict-loading and sync in the same order.
  /// `shard_layout` picks the data-parallel layout (layout_choice.h's make_plan): owner_aligned (A,
  /// the default), element_wise (B: ZeRO-1's even cut per bucket, one bucket until set_bucket_bytes;
  /// each Muon gradient's pieces sent to its DP
  /// owner by one all-to-all and the result's pieces back by a second; with TP, the owner's whole
  /// piece then takes part in the TP exchange as under A) or auto (the one moving fewer bytes).
  /// grid_plan().layout_reason says which and why. Without TP a parameter's storage becomes its run
  /// of the optimizer's parameter buffer (alias_parameters; values kept): under layout B every
  /// parameter's, under layout A each one no bucket boundary cuts. A view taken of such a parameter
  /// before construction or set_bucket_bytes no longer aliases it.
  DistributedMuonWithAdamW(NamedParameters params, Communicator& dp, std::vector<ParamGroup> groups = default_groups(),
                           std::vector<RoutingRule> rules = default_routing_rules(), SplitRegistry splits = {},
                           TensorParallelContext tp = {}, const std::string& shard_layout = "owner_aligned");

  /// Collective. A parameter whose gradient is undefined on some ranks contributes zeros there; a
  /// parameter with no gradient on any rank is skipped (its state does not advance), as in the
  /// single-process container. ShapeError when a parameter's tensor no longer has its planned
  /// logical shape. With debug checks on, this rank's NS work is audited against the plan's
  /// prediction for the matrices it owns (ns_audit.h); the audit is local, no extra collective.
  void step() override;

  /// This rank's Newton-Schulz work in the last step, per group index.
  const NsCounts& last_ns_counts() const { return last_ns_counts_; }

  /// Where the last step's time went on this rank, in milliseconds. The *_wait parts are the
  /// communication left exposed: time blocked waiting for a reduce-scatter or all-gather that
  /// had not finished behind other work.
  struct StepTimes {
    int64_t buckets = 1;
    int64_t buckets_in_backward = 0;  ///< reduce-scatters posted before end_backward_reduction()
    double backward_pack_ms = 0;      ///< packing done during backward (outside step, not in total_ms)
    double pack_ms = 0;               ///< gradients into the flat buffer, within step()
    double reduce_wait_ms = 0;        ///< blocked on the reduce-scatters
    double norm_ms = 0;               ///< the global gradient norm (one small all-reduce) and the clip
    double update_ms = 0;             ///< the shard's values, Muon (momentum, NS, update) and AdamW on them
    double exchange_wait_ms = 0;      ///< layout B: blocked on its DP all-to-alls (not in update_ms)
    double gather_wait_ms = 0;        ///< blocked on the all-gathers (with TP: the all-gather and the unpacking;
                                      ///< the TP exchange and all-to-alls count in update_ms)
    double unpack_ms = 0;             ///< the gathered buffer into the parameters
    double total_ms = 0;
  };
  const StepTimes& last_step_times() const { return last_times_; }

  /// Collective in effect: every data-parallel rank must set the same value before the same step.
  /// Moves the reduce-scatter and all-gather in buckets of about `bytes` of reduce-scatter input
  /// (shard_buckets.h) and overlaps them: bucket k's reduce-scatter travels while bucket k+1 is
  /// packed; bucket k's all-gather starts once the matrices and AdamW elements reaching into it are
  /// updated, and travels while later buckets' Newton-Schulz runs (the MPI backend is driven by
  /// Work::test() between buckets). Under layout B the gather-to-owner and scatter-back all-to-alls
  /// run per bucket too (every matrix lies in one bucket of its cut): bucket k's matrices are
  /// orthogonalized once they arrived, while later buckets' gradients travel and earlier buckets'
  /// results go back and are all-gathered. With tensor parallelism the reduce-scatter and the
  /// all-gather run in these buckets, but the TP exchange between them needs every bucket: the
  /// all-gathers start together after the update and each bucket is unpacked as it arrives. The result is bitwise equal
  /// to one bucket's, since the reduce-scatter sums in rank order per element and NS is per matrix. 0 (the default):
  /// one bucket. Layout B's cut follows its buckets (element_plan.h: buckets of whole parameters in backward order,
  /// each cut evenly over the ranks), so under element_wise or auto this re-plans: collective (the hash check) when the
  /// plan changes, and then only before the first step or state load (InvalidArgument afterwards: the state would have
  /// to move between ranks; a checkpoint reshards it instead). Layout A's buckets are cut from its plan and never
  /// change it.
  void set_bucket_bytes(int64_t bytes);
  /// Number of buckets in use.
  int64_t buckets() const { return buckets_.count(); }
  /// The buckets in use over plan()'s shards.
  const ShardBuckets& bucket_layout() const { return buckets_; }
  /// Resets every gradient; first waits for and drops a reduction started for a step that did not
  /// run (discard_backward_reduction).
  void zero_grad() override;

  /// Reduce-scatters started during backward. Call right before the step's last backward (the last
  /// micro-batch's: a gradient accumulated again after its bucket was packed is an error); then call
  /// gradient_ready(i) as each parameter's gradient becomes final (engine/train/gradient_ready_hooks.h
  /// does it from autograd's post-accumulate-grad hooks). Each bucket is packed and its reduce-scatter
  /// posted as soon as every parameter with a piece in it is ready, strictly in bucket order, so every
  /// rank issues the same collectives in the same order whatever its timing. Layout A keeps each
  /// shard in backward order (owner_plan.h), so its front buckets complete early in backward; layout
  /// B's bucket k is one contiguous run of the backward order (element_plan.h), complete as soon as
  /// backward has passed it.
  /// Collective order: after begin, this rank's next collective on the data-parallel communicator must
  /// be end_backward_reduction() or step(). A no-op (step() reduces everything, as without it) when
  /// the communicator is not on the CPU (a CUDA parameter's hook runs on autograd's device thread; not
  /// measured without a GPU).
  /// The step's result is bitwise equal to a step without it: the same bytes are reduced in the same
  /// order. Local, non-blocking (posting is local).
  void begin_backward_reduction();
  /// Parameter i's gradient is final for this step (index into parameters()). Packs and posts every
  /// bucket that became complete, in order. Ignored when no reduction is armed. InvalidArgument when
  /// i is out of range, or when i was already reported and one of its buckets has been posted (its
  /// gradient changed after it was packed). Runs on the thread that runs backward; non-blocking.
  void gradient_ready(size_t i);
  /// Posts the buckets not yet posted (a parameter without a gradient contributes zeros). Call after
  /// the last backward, before any other collective on the data-parallel communicator; step() calls it
  /// when it was not. Non-blocking.
  void end_backward_reduction();
  /// Waits for and drops the reduce-scatters posted for a step that will not run (a skipped
  /// iteration). Collective in effect: every rank that posted them must discard or step.
  void discard_backward_reduction();
  /// Reduce-scatters posted so far for the coming step (0 after a step or a discard).
  int64_t reductions_posted() const { return static_cast<int64_t>(reductions_.size()); }

  /// This rank's state only: the momenta of the Muon matrices it owns and the AdamW moments of its
  /// element runs, keyed by parameter name, plus the layout record in metadata "orthotron.layout":
  /// world size, this rank, plan hash, shard length, every Muon owner and every AdamW element range.
  StateDict state_dict() const override;
  /// Collective. Each rank validates its own state dict through decode_optimizer_state (the same
  /// checks as the single-process load) plus the layout record (same world size, same plan hash,
  /// its own rank); if any rank fails, every rank throws StateDictError. Then the state is restored
  /// and the parameters re-synchronized from their shards.
  LoadReport load_state_dict(const StateDict& sd, const LoadOptions& options = {}) override;

  std::string assignment_table() const override { return format_assignment(assignment_, groups_); }
  ParamGroup& group(const std::string& name) override;
  const std::vector<ParamGroup>& groups() const { return groups_; }

  /// The data-parallel layout (over TP pieces when TP > 1).
  const OwnerPlan& plan() const { return plan_; }
  /// The whole plan: the layout plus the tensor-parallel owners (grid.tp == 1 without TP).
  const GridPlan& grid_plan() const { return grid_; }
  int tp_size() const { return tp_.size(); }
  int tp_rank() const { return tp_.rank(); }
  /// The tensor-parallel communicator (null without tensor parallelism).
  Communicator* tp_comm() const { return tp_.comm; }
  /// The parameters it updates (the live tensors, in construction order).
  const NamedParameters& parameters() const { return params_; }
  const SplitRegistry& splits() const { return splits_; }
  Communicator& comm() const { return dp_; }
  /// Collective: every rank's parameters become the values held in the shards (an all-gather).
  void sync_parameters();
  /// This rank's segments of the plan (buffer order): under layout A the Muon matrices it owns
  /// whole and its AdamW element run; under layout B pieces of anything (at most one segment per
  /// parameter either way).
  const std::vector<PlanSegment>& shard_segments() const { return my_segments_; }
  /// What this rank keeps state for and checkpoints (OwnerPlan::holdings): the Muon matrices it
  /// owns, whole, and its shard's AdamW runs. Equal to shard_segments() under layout A.
  const std::vector<PlanSegment>& holdings() const { return holdings_; }
  /// The parameter values this rank holds (holdings()), keyed by parameter name: an owned Muon
  /// matrix whole in its shape, an AdamW run as a 1-D slice of the flat parameter (elements
  /// [param_begin, param_begin + count) of its segment). Copies; local, no communication.
  std::map<std::string, at::Tensor> parameter_shard() const;
  /// Collective. Each rank writes `shard` (as parameter_shard() returned it, at the same world size
  /// and plan) into the values it holds, then every rank's parameters are re-synchronized from the
  /// shards, so all ranks end bitwise equal. An entry in another floating dtype is converted where
  /// that is lossless (convert_losslessly). A missing, extra or mis-shaped entry, or a lossy dtype,
  /// on any rank makes every rank throw StateDictError (naming the parameter on the rank that found
  /// it); nothing is changed then.
  void load_parameter_shard(const std::map<std::string, at::Tensor>& shard);
  /// Optimizer state elements this rank holds (Muon momenta + AdamW moments), allocated or not. With
  /// TP, a gathered Muon parameter's momentum is logical-sized on its TP owner and absent elsewhere.
  int64_t state_elements() const;
  /// The momentum of an owned Muon parameter (undefined when not owned or not yet stepped).
  at::Tensor muon_momentum(const std::string& param) const;
  /// Step count of a parameter (kept on every rank).
  int64_t step_count(const std::string& param) const;

 private:
  size_t index_of(const std::string& param) const;
  /// The grid plan for buckets of `bucket_bytes` (layout B's cut follows them; layout A ignores them).
  GridPlan plan_for_buckets(int64_t bucket_bytes) const;
  /// Makes `grid` the plan: checks its hash across the DP and TP ranks (collective), allocates the
  /// buffers (zero) and this rank's segments and holdings. No state may exist yet.
  void adopt_plan(GridPlan grid);
  /// This rank's shard of param_buffer_ <- the current values of the parameters it holds.
  void load_shard_from_params();
  /// All-gather of the shards, then every parameter <- its elements in the gathered buffer. Collective.
  void gather_shards_into_params();
  /// Bucket k's gradient pieces (zeros where this rank has no gradient) into grad_buffer_, then its
  /// reduce-scatter into shard_grad_, posted and appended to reductions_. Collective over DP.
  void post_reduction(int64_t k);
  /// Posts, in order, the buckets after the last posted one whose parameters are all ready (all of
  /// them when `all`); packing time goes to `pack_ms`.
  void post_reductions(bool all, double& pack_ms);
  /// Bucket k's all-gather (param_shard_ -> param_buffer_), posted. Collective over DP.
  WorkPtr post_gather(int64_t k);
  /// The parameters' elements in bucket k <- param_buffer_ (nothing for a parameter that aliases it).
  void unpack_bucket(int64_t k);
  /// Without TP: each parameter whose pieces are one run of param_buffer_ (under layout B every one;
  /// under layout A those no bucket boundary of the owner's shard cuts) gets that run as its storage
  /// (values kept), so the all-gather writes it in place and unpacking skips it; the others are
  /// copied as before. A parameter that another optimizer or the caller later moves to other storage
  /// is detected (its data pointer differs) and copied. InvariantError if a parameter is not one run
  /// under layout B.
  void alias_parameters();
  /// Step 3 for segment `s`: AdamW runs at once; a Muon matrix this rank owns whole (layout A, not
  /// gathered by a TP owner) appends its task. False when the segment is left to the caller (a
  /// layout-B piece or a TP-gathered piece).
  bool update_segment(const PlanSegment& s, const at::Tensor& shard_grad, std::vector<MuonTask>& tasks,
                      std::vector<size_t>& stepped);
  /// Muon task for parameter i (its momentum created as zeros on first use): `value` updated in
  /// place from `grad`, both in the shape Newton-Schulz sees, with `split`; i appended to `stepped`.
  void add_muon_task(size_t i, const at::Tensor& value, const at::Tensor& grad, const ParamSplit* split,
                     std::vector<MuonTask>& tasks, std::vector<size_t>& stepped);
  /// Waits for each bucket's all-gather in order (`all_gathers`, one per bucket) and unpacks it into
  /// the parameters; the waits go to gather_wait_ms, the unpacking to unpack_ms.
  void unpack_gathers(std::vector<WorkPtr>& all_gathers);
  /// Steps 3 and 4 under layout A without TP, bucket by bucket (set_bucket_bytes).
  void update_and_gather_in_buckets(const std::vector<char>& any, const at::Tensor& shard_grad);
  /// Steps 3 and 4 under layout B without TP, bucket by bucket: every bucket's gather-to-owner
  /// all-to-all is posted at once; then, in bucket order, the owner orthogonalizes bucket k's
  /// matrices as soon as they arrived and posts their scatter-back, while bucket k-1's scatter-back
  /// is finished and its all-gather posted. Every rank posts the same collectives in the same order.
  void update_and_gather_element_wise_in_buckets(const std::vector<char>& any, const at::Tensor& shard_grad);
  /// Step 3 with TP (either layout): the all-to-alls and the TP exchange (on the whole shard).
  void update_gathered_or_element_wise(const std::vector<char>& any, const at::Tensor& shard_grad);
  /// InvariantError when last_ns_counts_ differs from `expected` (debug checks only).
  void audit_ns(const NsCounts& expected) const;
  /// Whether this rank keeps state for parameter i held in its shard (false for a gathered Muon
  /// parameter whose TP owner is another rank).
  bool keeps_state(size_t i) const;
  /// The split Newton-Schulz uses on this rank's matrix of parameter i: the piece's parts for a
  /// TP-local parameter, else the logical split (or nullptr).
  const ParamSplit* split_for(size_t i) const;
  /// Step 3 for the gathered Muon parameters `gathered` (this DP index's, the same list on every TP
  /// rank), with their averaged gradient and value pieces (flat, parallel to `gathered`): the pieces
  /// go to their TP owners by one all-to-all over the TP group, posted (collective over TP,
  /// non-blocking; the pieces are copied at the post). finish_send_gathered waits, and the owner
  /// appends its Muon tasks to `tasks` (logical tensors kept alive in `logical_values`).
  PostedExchange post_send_gathered(const std::vector<size_t>& gathered, const std::vector<at::Tensor>& grads,
                                    const std::vector<at::Tensor>& values);
  void finish_send_gathered(PostedExchange& x, const std::vector<size_t>& gathered, std::vector<MuonTask>& tasks,
                            std::vector<at::Tensor>& logical_values, std::vector<size_t>& stepped);
  /// The updated logical values back to the pieces' holders, into `dest` (flat, parallel to
  /// `gathered`). Collective over TP.
  void return_gathered_pieces(const std::vector<size_t>& gathered, const std::vector<at::Tensor>& logical_values,
                              std::vector<at::Tensor>& dest);
  bool element_wise() const { return plan_.layout == ShardLayout::kElementWise; }
  /// Layout B: whether parameter i lies in bucket k (every parameter lies in one bucket of layout
  /// B's cut); k < 0: every bucket.
  bool in_bucket(size_t i, int64_t k) const;
  /// The plan's segments (every rank's) of the Muon matrices in bucket k, in buffer order; k < 0:
  /// of every Muon matrix. Indexed once per bucket layout, so a step's per-bucket exchanges cost
  /// O(segments) in all rather than O(buckets x segments).
  const std::vector<const PlanSegment*>& muon_segments(int64_t k) const;
  /// Layout B: the Muon parameters this rank owns in bucket k, in parameter order; k < 0: all of
  /// them. Indexed with muon_segments.
  const std::vector<size_t>& owned_params(int64_t k) const;
  /// Layout B, collective over DP: every Muon matrix this rank owns, its averaged gradient whole
  /// (flat), in parameter order, from the shards holding its pieces (one uneven all-to-all).
  std::vector<at::Tensor> gather_to_owners(const at::Tensor& shard_grad);
  /// The same for the matrices in bucket k (k < 0: all), in two halves: post (collective over DP,
  /// non-blocking; `shard_grad` must not change until finished) and finish (waits, then returns the
  /// matrices this rank owns in bucket k, in parameter order).
  PostedExchange post_gather_to_owners(const at::Tensor& shard_grad, int64_t k);
  std::vector<at::Tensor> finish_gather_to_owners(PostedExchange& x, const at::Tensor& shard_grad, int64_t k);
  /// Layout B, collective over DP: `owned` (flat values of every matrix this rank owns, in
  /// parameter order) into param_shard_ here and, by one uneven all-to-all, into the shards holding
  /// their other pieces.
  void scatter_owned_values(const std::vector<at::Tensor>& owned);
  /// The same for the matrices in bucket k (k < 0: all; `owned` those this rank owns there): post
  /// writes this rank's own pieces and posts the all-to-all (collective over DP, non-blocking);
  /// finish waits and writes the received pieces into param_shard_.
  PostedExchange post_scatter_owned_values(const std::vector<at::Tensor>& owned, int64_t k);
  void finish_scatter_owned_values(PostedExchange& x, int64_t k);

  Communicator& dp_;
  TensorParallelContext tp_;
  NamedParameters params_;
  std::vector<ParamGroup> groups_;
  std::vector<Assignment> assignment_;
  SplitRegistry splits_;
  std::string shard_layout_;  // the setting: owner_aligned, element_wise or auto
  GridPlan grid_;
  OwnerPlan plan_;                       // grid_.dp
  std::vector<PlanParam> audit_params_;  // what NS sees per parameter on this rank (pieces or logical)
  NsCounts last_ns_counts_;
  std::map<std::string, size_t> index_;
  std::vector<int64_t> steps_;             // per parameter
  std::map<size_t, at::Tensor> momentum_;  // owned Muon parameters
  std::map<size_t, AdamWState> adamw_;     // AdamW parameters with a run in this shard (slice-sized)
  std::vector<PlanSegment> my_segments_;
  std::vector<PlanSegment> holdings_;
  ShardBuckets buckets_;                                        // the physical arrangement of the two W x S buffers
  std::vector<std::vector<BucketPiece>> pieces_;                // per bucket: every parameter piece in it
  std::vector<std::vector<int64_t>> param_buckets_;             // per parameter: the buckets holding a piece of it
  std::vector<std::vector<const PlanSegment*>> muon_segments_;  // per bucket, then all: muon_segments()
  std::vector<std::vector<size_t>> owned_params_;               // per bucket, then all: owned_params()
  std::vector<const void*> alias_;  // per parameter: its data pointer while it aliases param_buffer_, else null
  // The reduction of the coming step (begin_backward_reduction .. step): reduce-scatters posted in
  // bucket order; while armed, which parameters are ready and how many each bucket still waits for.
  std::vector<WorkPtr> reductions_;
  bool armed_ = false;
  std::vector<char> ready_;
  std::vector<int64_t> waiting_;
  int64_t buckets_in_backward_ = 0;
  double backward_pack_ms_ = 0;
  StepTimes last_times_;
  at::Tensor grad_buffer_;   // W x S, bucket-major
  at::Tensor param_buffer_;  // W x S, bucket-major
  at::Tensor param_shard_;   // S
  at::Tensor shard_grad_;    // S: this rank's averaged gradients, reused every step (no fresh pages)
};

}  // namespace orthotron

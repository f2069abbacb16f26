#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <tuple>

namespace rnninfer {

bool needs_finish(const LayerDesc& layer) {
  return (layer.dirs() == 2 && layer.merge != Merge::kConcat) || layer.residual_from != kNoResidual;
}

namespace {
// A forward layer hands its output on block by block: the layer above can
// start on block k as soon as it is done. After a layer read backwards the
// layer above needs the whole sequence.
bool streams_blocks(const LayerDesc& below) {
  return below.dirs() == 1 && below.direction == Direction::kForward;
}
}  // namespace

std::vector<int> split_batch_weighted(const std::vector<int>& lengths, const std::vector<double>& speeds,
                                      int min_rows) {
  const int B = static_cast<int>(lengths.size());
  const int shards = std::max(1, std::min(B, static_cast<int>(speeds.size())));
  min_rows = std::max(1, std::min(min_rows, B / shards));
  std::vector<long> prefix(static_cast<size_t>(B) + 1, 0);
  for (int i = 0; i < B; ++i)
    prefix[static_cast<size_t>(i) + 1] = prefix[static_cast<size_t>(i)] + lengths[static_cast<size_t>(i)];
  double speed_sum = 0;
  for (int k = 0; k < shards; ++k) speed_sum += std::max(speeds[static_cast<size_t>(k)], 1e-9);
  std::vector<int> begin{0};
  double cum = 0;
  for (int k = 0; k + 1 < shards; ++k) {
    cum += std::max(speeds[static_cast<size_t>(k)], 1e-9);
    const double target = static_cast<double>(prefix[static_cast<size_t>(B)]) * cum / speed_sum;
    // Nearest boundary to the target within what leaves every shard min_rows.
    const int lo = begin.back() + min_rows;
    const int hi = B - min_rows * (shards - k - 1);
    int j = static_cast<int>(std::lower_bound(prefix.begin() + lo, prefix.begin() + hi + 1,
                                              static_cast<long>(std::ceil(target))) - prefix.begin());
    j = std::min(j, hi);
    if (j > lo && target - static_cast<double>(prefix[static_cast<size_t>(j) - 1]) <
                      static_cast<double>(prefix[static_cast<size_t>(j)]) - target)
      --j;
    begin.push_back(j);
  }
  begin.push_back(B);
  return begin;
}

Plan make_plan(const ModelDesc& desc, int steps, const std::vector<int>& lengths, int threads,
               bool gather_first, int split_align) {
  Plan plan;
  const int B = static_cast<int>(lengths.size());
  const int L = static_cast<int>(desc.layers.size());
  plan.threads = std::max(1, threads);
  // Threads split the stack: (layer + direction) % threads; a thread with
  // nothing to do is not woken at all (one forward layer runs alone). Large
  // batches never get here with several threads: the engine runs them as
  // independent single-threaded sub-calls over batch shards.
  int needed = 1;
  for (int l = 0; l < L; ++l) needed = std::max(needed, l + desc.layers[static_cast<size_t>(l)].dirs());
  // Forward/backward stacks at small batch: split every layer's hidden units
  // among the threads (each keeps its slice of the recurrent weights in its
  // own cache; one barrier per step) rather than a wavefront, whose threads
  // stream whole layers from the shared cache. Needs unit slices that align
  // with the gemm panels, and cells whose step needs no other slice's values
  // mid-step (no LSTM projection, no GRU reset-before).
  bool split = plan.threads > 1 && split_align > 0;
  for (const LayerDesc& layer : desc.layers)
    split = split && layer.dirs() == 1 && layer.proj_size == 0 &&
            !(layer.cell == Cell::kGru && !layer.reset_after) &&
            layer.units % (split_align * plan.threads) == 0;
  if (split) {
    plan.split = plan.threads;
    needed = 1;
  }
  plan.threads = std::min(plan.threads, std::max(needed, plan.split));
  const int shards = 1;
  plan.shard_begin = {0, B};
  plan.wavefront = plan.threads > 1 && plan.split == 1;
  // Only a layer boundary that streams blocks can pipeline.
  bool pipelined = false;
  for (int l = 1; l < L; ++l) pipelined = pipelined || streams_blocks(desc.layers[static_cast<size_t>(l) - 1]);
  // A wavefront fills and drains one block per layer boundary: smaller blocks
  // there, while each block still amortises its gemm over several steps.
  // Without such a boundary small blocks only re-stream the input weights.
  plan.block_steps = plan.wavefront && pipelined ? std::max(4, std::min(kTimeBlock, steps / 12)) : kTimeBlock;
  // A block's input projections are written by the gemm (or the token table)
  // and read back by the steps: kept within kBlockProjectionBytes they are
  // still in L2 when the steps read them (64 sequences of an LSTM(64): 4
  // steps, 256 KiB, rather than 16 steps, 1 MiB, the whole L2). Where not
  // even kMinBlockSteps steps fit, blocks stay long: shortening them measured
  // 4 % slower for 64 sequences of LSTM(256), whose steps stream their
  // projections from L3 either way.
  int max_gh = 1;
  for (const LayerDesc& layer : desc.layers) max_gh = std::max(max_gh, layer.gates() * layer.units);
  const std::size_t step_bytes = static_cast<std::size_t>(std::max(B, 1)) * max_gh * sizeof(float);
  const int fit = static_cast<int>(std::min<std::size_t>(kTimeBlock, kBlockProjectionBytes / step_bytes));
  if (fit >= kMinBlockSteps) plan.block_steps = std::min(plan.block_steps, fit);
  // Block boundaries. A wavefront also ramps its blocks up at the start and
  // down at the end (1, 2, 4 steps ...): the pipeline fills and drains
  // through one block per layer boundary, during which other threads wait.
  plan.block_begin.assign(1, 0);
  std::vector<int> ramp;
  if (plan.wavefront && pipelined)
    for (int r = 2; r < plan.block_steps && r <= 2 && 4 * r <= steps; r *= 2) ramp.push_back(r);
  int head = 0, tail = 0;
  for (int r : ramp) head += r;
  tail = head;
  if (head + tail > steps) ramp.clear(), head = tail = 0;
  for (int r : ramp) plan.block_begin.push_back(plan.block_begin.back() + r);
  const int middle_end = steps - tail;
  while (plan.block_begin.back() < middle_end)
    plan.block_begin.push_back(std::min(plan.block_begin.back() + plan.block_steps, middle_end));
  for (auto it = ramp.rbegin(); it != ramp.rend(); ++it)
    plan.block_begin.push_back(plan.block_begin.back() + *it);
  plan.blocks = static_cast<int>(plan.block_begin.size()) - 1;
  const int NB = plan.blocks;
  plan.projected.assign(static_cast<size_t>(L), false);
  if (plan.wavefront)
    for (int l = 1; l < L; ++l) plan.projected[static_cast<size_t>(l)] = true;
  (void)gather_first;  // layer 0 keeps its projection in its own unit (no producer thread)

  // Unit ids by key, to wire dependencies.
  std::map<std::tuple<int, int, int, int, int>, int> id;  // (kind, layer, dir, block, shard)
  std::vector<Unit> units;
  auto add = [&](Unit u) {
    id[{static_cast<int>(u.kind), u.layer, u.dir, u.block, u.shard}] = static_cast<int>(units.size());
    units.push_back(std::move(u));
  };
  for (int l = 0; l < L; ++l) {
    const LayerDesc& layer = desc.layers[static_cast<size_t>(l)];
    for (int s = 0; s < shards; ++s) {
      for (int d = 0; d < layer.dirs(); ++d) {
        const bool rev = d == 1 || layer.direction == Direction::kBackward;
        for (int k = 0; k < NB; ++k) {
          Unit u;
          u.kind = Unit::Kind::kDirection;
          u.layer = l;
          u.dir = d;
          u.reverse = rev;
          u.block = rev ? NB - 1 - k : k;
          u.first = k == 0;
          u.shard = s;
          u.thread = plan.split > 1 ? 0 : (l + d) % plan.threads;
          add(std::move(u));
        }
      }
      if (plan.projected[static_cast<size_t>(l)]) {
        const LayerDesc& below = desc.layers[static_cast<size_t>(l) - 1];
        for (int d = 0; d < layer.dirs(); ++d)
          for (int k = 0; k < NB; ++k) {
            Unit u;
            u.kind = Unit::Kind::kProject;
            u.layer = l;
            u.dir = d;
            u.block = k;
            u.shard = s;
            // Below a forward stack the projections alternate between the
            // producing and the consuming thread, which balances the two sides
            // of the wavefront; after a layer read backwards (a barrier) each
            // direction projects its own rows.
            const bool streamable = streams_blocks(below);
            const int producer = (l - 1 + below.dirs() - 1) % plan.threads;
            const int consumer = (l + d) % plan.threads;
            u.thread = streamable ? (k % 2 == 0 ? producer : consumer) : consumer;
            add(std::move(u));
          }
      }
      if (needs_finish(layer))
        for (int k = 0; k < NB; ++k) {
          Unit u;
          u.kind = Unit::Kind::kFinish;
          u.layer = l;
          u.block = k;
          u.shard = s;
          u.thread = plan.split > 1 ? 0 : (l + layer.dirs() - 1) % plan.threads;
          add(std::move(u));
        }
    }
  }
  auto dir_id = [&](int l, int d, int b, int s) {
    return id.at({static_cast<int>(Unit::Kind::kDirection), l, d, b, s});
  };
  // The units that complete rows of block b of layer l's output.
  auto producers = [&](int l, int b, int s, std::vector<int>* out) {
    const LayerDesc& layer = desc.layers[static_cast<size_t>(l)];
    if (needs_finish(layer)) {
      out->push_back(id.at({static_cast<int>(Unit::Kind::kFinish), l, 0, b, s}));
    } else {
      for (int d = 0; d < layer.dirs(); ++d) out->push_back(dir_id(l, d, b, s));
    }
  };
  for (Unit& u : units) {
    const LayerDesc& layer = desc.layers[static_cast<size_t>(u.layer)];
    if (u.kind == Unit::Kind::kDirection) {
      if (!u.first) u.deps.push_back(dir_id(u.layer, u.dir, u.reverse ? u.block + 1 : u.block - 1, u.shard));
      if (plan.projected[static_cast<size_t>(u.layer)]) {
        // Its rows arrive through the projection of each block it reads.
        u.deps.push_back(id.at({static_cast<int>(Unit::Kind::kProject), u.layer, u.dir, u.block, u.shard}));
      } else if (u.layer > 0) {
        const LayerDesc& below = desc.layers[static_cast<size_t>(u.layer) - 1];
        const bool streamable = streams_blocks(below);
        if (streamable && !u.reverse) {
          producers(u.layer - 1, u.block, u.shard, &u.deps);
        } else {
          for (int b = 0; b < NB; ++b) producers(u.layer - 1, b, u.shard, &u.deps);
        }
      }
    } else if (u.kind == Unit::Kind::kProject) {
      producers(u.layer - 1, u.block, u.shard, &u.deps);
    } else {
      for (int d = 0; d < layer.dirs(); ++d) u.deps.push_back(dir_id(u.layer, d, u.block, u.shard));
      // The residual source's rows of this block are complete once the layer
      // below's are (sources are earlier layers); the input stream always is.
    }
  }

  // Global topological order (Kahn), earliest wave first: the position of a
  // block in its direction's reading order plus the layer depth, so that a
  // thread holding several layers interleaves them as a wavefront.
  const int n = static_cast<int>(units.size());
  std::vector<std::vector<int>> users(static_cast<size_t>(n));
  std::vector<int> missing(static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i)
    for (int d : units[static_cast<size_t>(i)].deps) {
      users[static_cast<size_t>(d)].push_back(i);
      ++missing[static_cast<size_t>(i)];
    }
  // Without a wavefront the order is layer by layer (a layer's weights stay
  // in cache, and a single thread can reuse a stream's memory once done).
  const bool wave = plan.wavefront;
  auto rank = [&](int i) {
    const Unit& u = units[static_cast<size_t>(i)];
    const int pos = u.reverse ? NB - 1 - u.block : u.block;
    const int kind = u.kind == Unit::Kind::kProject ? -1 : (u.kind == Unit::Kind::kFinish ? 1 : 0);
    return std::make_tuple(wave ? pos + u.layer : u.layer, wave ? u.layer : pos, kind, u.dir, u.shard, i);
  };
  using Key = decltype(rank(0));
  std::priority_queue<Key, std::vector<Key>, std::greater<Key>> ready;
  for (int i = 0; i < n; ++i)
    if (missing[static_cast<size_t>(i)] == 0) ready.push(rank(i));
  std::vector<int> order;
  order.reserve(static_cast<size_t>(n));
  while (!ready.empty()) {
    const int i = std::get<5>(ready.top());
    ready.pop();
    order.push_back(i);
    for (int v : users[static_cast<size_t>(i)])
      if (--missing[static_cast<size_t>(v)] == 0) ready.push(rank(v));
  }
  std::vector<int> new_id(static_cast<size_t>(n));
  for (int pos = 0; pos < n; ++pos) new_id[static_cast<size_t>(order[static_cast<size_t>(pos)])] = pos;
  plan.units.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    Unit u = units[static_cast<size_t>(i)];
    for (int& d : u.deps) d = new_id[static_cast<size_t>(d)];
    plan.units[static_cast<size_t>(new_id[static_cast<size_t>(i)])] = std::move(u);
  }
  plan.per_thread.assign(static_cast<size_t>(plan.threads), {});
  for (int i = 0; i < n; ++i)
    plan.per_thread[static_cast<size_t>(plan.units[static_cast<size_t>(i)].thread)].push_back(i);
  return plan;
}

bool SplitBackoff::judge(int64_t long_wait_ns, int64_t call_ns, int64_t end_ns) {
  if (long_wait_ns * 4 < call_ns) {
    strikes_.store(0, std::memory_order_relaxed);
    doublings_.store(0, std::memory_order_relaxed);
    return false;
  }
  if (strikes_.fetch_add(1, std::memory_order_relaxed) + 1 < kStrikes) return false;
  strikes_.store(0, std::memory_order_relaxed);
  const int doublings = doublings_.load(std::memory_order_relaxed);
  int64_t backoff_ns = kBackoffCalls * std::max<int64_t>(call_ns, 1);
  for (int i = 0; i < doublings && backoff_ns < kMaxBackoffNs; ++i) backoff_ns *= 2;
  // Doublings past the cap change nothing, so the count stops there too.
  if (backoff_ns < kMaxBackoffNs) doublings_.store(doublings + 1, std::memory_order_relaxed);
  until_ns_.store(end_ns + std::min(backoff_ns, kMaxBackoffNs), std::memory_order_relaxed);
  return true;
}

}  // namespace rnninfer

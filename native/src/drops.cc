// The drop probe (bpf/wgflow_drops.bpf.c): load, attach and detach the kfree_skb tracepoint
// program, tell it which interfaces to watch, and drain its aggregates off the JS thread.
//
// A separate BPF object from the flow datapath, so a kernel that cannot run it (no BTF, no
// kfree_skb reason) loses DROP events only.
#include "drops.h"

#include "bpf_util.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "../../bpf/wgflow.h"
}

namespace {

constexpr __u32 kDrainBatch = 1024;

class DropProbe : public Napi::ObjectWrap<DropProbe> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    exports.Set("DropProbe", DefineClass(env, "DropProbe",
                                         {InstanceMethod("attach", &DropProbe::Attach),
                                          InstanceMethod("detach", &DropProbe::Detach),
                                          InstanceMethod("isAttached", &DropProbe::IsAttached),
                                          InstanceMethod("setWatch", &DropProbe::SetWatch),
                                          InstanceMethod("drain", &DropProbe::Drain),
                                          InstanceMethod("reasons", &DropProbe::Reasons),
                                          InstanceMethod("stats", &DropProbe::Stats),
                                          InstanceMethod("close", &DropProbe::Close)}));
  }

  // new DropProbe({ objectPath, maxKeys })
  explicit DropProbe(const Napi::CallbackInfo &info) : Napi::ObjectWrap<DropProbe>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "DropProbe: options object expected");
    Napi::Object o = info[0].As<Napi::Object>();
    std::string path = o.Get("objectPath").As<Napi::String>();
    uint32_t max_keys = o.Get("maxKeys").As<Napi::Number>().Uint32Value();
    libbpf_set_print(CaptureLibbpfLog);
    TakeLog();
    obj_ = bpf_object__open_file(path.c_str(), nullptr);
    if (!obj_) {
      int err = errno;
      throw ErrnoError(env, err, "cannot open BPF object " + path + ": " + TakeLog());
    }
    struct bpf_map *m0 = bpf_object__find_map_by_name(obj_, "wgf_drops0");
    struct bpf_map *m1 = bpf_object__find_map_by_name(obj_, "wgf_drops1");
    prog_ = bpf_object__find_program_by_name(obj_, "wgflow_drop");
    if (!m0 || !m1 || !prog_) {
      Destroy();
      throw Napi::Error::New(env, "BPF object " + path + " lacks the drop probe (wrong file?)");
    }
    bpf_map__set_max_entries(m0, max_keys);
    bpf_map__set_max_entries(m1, max_keys);
    int err = bpf_object__load(obj_);
    if (err) {
      std::string log = TakeLog();
      Destroy();
      throw ErrnoError(env, err, "loading the drop probe failed" + PrivilegeHint(err) + "\n" + log);
    }
    drops_fd_[0] = bpf_map__fd(m0);
    drops_fd_[1] = bpf_map__fd(m1);
    config_fd_ = bpf_map__fd(bpf_object__find_map_by_name(obj_, "wgf_drop_config"));
    reasons_fd_ = bpf_map__fd(bpf_object__find_map_by_name(obj_, "wgf_drop_reasons"));
    stats_fd_ = bpf_map__fd(bpf_object__find_map_by_name(obj_, "wgf_drop_stats"));
    ncpus_ = libbpf_num_possible_cpus();
    if (ncpus_ <= 0) {
      Destroy();
      throw ErrnoError(env, -ncpus_, "cannot count the possible CPUs");
    }
    // The barrier of the map switch (Execute below): a one-entry map of maps, whose updates the
    // kernel completes only after an RCU grace period (maybe_wait_bpf_programs).
    barrier_inner_fd_ = bpf_map_create(BPF_MAP_TYPE_ARRAY, "wgf_drop_bar_in", 4, 4, 1, nullptr);
    if (barrier_inner_fd_ >= 0) {
      LIBBPF_OPTS(bpf_map_create_opts, mo, .inner_map_fd = static_cast<__u32>(barrier_inner_fd_));
      barrier_fd_ = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "wgf_drop_barrier", 4, 4, 1, &mo);
    }
    if (barrier_fd_ < 0) {
      int e = errno;
      Destroy();
      throw ErrnoError(env, e, "cannot create the drop probe's switch barrier map" + PrivilegeHint(e));
    }
  }
  ~DropProbe() override { Destroy(); }

  int drops_fd(int i) const { return drops_fd_[i & 1]; }
  /*
   * Returns once every probe run that started before it has finished. Tracing programs run
   * inside an RCU read-side section, and the kernel completes an update of a map of maps only
   * after an RCU grace period, so that user space knows that no program still uses the old
   * value. 0, or an errno.
   */
  int WaitForProbeRuns() {
    __u32 zero = 0;
    __u32 inner = static_cast<__u32>(barrier_inner_fd_);
    return bpf_map_update_elem(barrier_fd_, &zero, &inner, BPF_ANY) ? errno : 0;
  }
  int config_fd() const { return config_fd_; }
  std::mutex &config_mu() { return config_mu_; }
  void Ref2() { Ref(); }
  void Unref2() {
    draining_ = false;
    Unref();
    if (closing_) Destroy();
  }

 private:
  void CheckOpen(Napi::Env env) const {
    if (!obj_ || closing_) throw Napi::Error::New(env, "the drop probe is closed");
  }

  Napi::Value Attach(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    if (link_) return env.Undefined();
    TakeLog();
    struct bpf_link *l = bpf_program__attach(prog_);
    if (!l) {
      int err = errno;
      throw ErrnoError(env, err, "attaching the drop probe to skb:kfree_skb failed" + PrivilegeHint(err) + "\n" + TakeLog());
    }
    link_ = l;
    return env.Undefined();
  }

  Napi::Value Detach(const Napi::CallbackInfo &info) {
    if (link_) bpf_link__destroy(link_);
    link_ = nullptr;
    return info.Env().Undefined();
  }

  Napi::Value IsAttached(const Napi::CallbackInfo &info) {
    return Napi::Boolean::New(info.Env(), link_ != nullptr);
  }

  // setWatch(ifindexes: number[], netnsInode: number): the interfaces whose drops are reported.
  Napi::Value SetWatch(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    if (!info[0].IsArray() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "setWatch(ifindexes, netns) expected");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<__u32> want;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      double v = arr.Get(i).As<Napi::Number>().DoubleValue();
      // The drop key holds a 16-bit ifindex, as the flow keys do (attach refuses larger ones).
      if (!(v >= 1 && v <= 0xffff) || v != static_cast<double>(static_cast<uint32_t>(v)))
        throw Napi::RangeError::New(env, "setWatch: an ifindex must be an integer from 1 to 65535");
      want.push_back(static_cast<__u32>(v));
    }
    if (want.size() > WGF_DROP_WATCH_MAX)
      throw Napi::RangeError::New(env, "setWatch: at most " + std::to_string(WGF_DROP_WATCH_MAX) + " interfaces");
    // An array map's update copies in place: a probe run during the write may test a drop
    // against part of the old and part of the new watch list (only drops at that instant, only
    // of interfaces being added or removed). The drain's switch of the active map rewrites the
    // entry too, so both take the lock.
    std::lock_guard<std::mutex> lock(config_mu_);
    __u32 zero = 0;
    struct wgf_drop_config cfg;
    if (bpf_map_lookup_elem(config_fd_, &zero, &cfg)) throw ErrnoError(env, errno, "cannot read the drop probe's config");
    cfg.netns = info[1].As<Napi::Number>().Uint32Value();
    memset(cfg.watch, 0, sizeof(cfg.watch));
    for (size_t i = 0; i < want.size(); i++) cfg.watch[i] = want[i];
    if (bpf_map_update_elem(config_fd_, &zero, &cfg, BPF_ANY)) throw ErrnoError(env, errno, "cannot write the drop probe's config");
    return env.Undefined();
  }

  class DrainWorker : public Napi::AsyncWorker {
   public:
    DrainWorker(Napi::Env env, DropProbe *p)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), p_(p) {
      p_->Ref2();
    }
    Napi::Promise Promise() { return deferred_.Promise(); }
    void Execute() override {
      __u32 old;
      {
        std::lock_guard<std::mutex> lock(p_->config_mu());
        __u32 zero = 0;
        struct wgf_drop_config cfg;
        if (bpf_map_lookup_elem(p_->config_fd(), &zero, &cfg)) return Fail(errno, "cannot read the drop probe's config");
        old = cfg.active & 1;
        cfg.active = old ^ 1;
        if (bpf_map_update_elem(p_->config_fd(), &zero, &cfg, BPF_ANY)) return Fail(errno, "cannot switch the drop maps");
      }
      // A probe run that read the old index just before the switch may still be adding to the
      // old map: wait for every such run to finish, then read it. Nothing is lost, nothing is
      // read while it is still being written.
      if (int e = p_->WaitForProbeRuns()) return Fail(e, "waiting for the drop probe's runs to finish failed");
      int fd = p_->drops_fd(old);
      __u32 token = 0;
      bool first = true;
      for (;;) {
        size_t at = count_;
        keys_.resize((at + kDrainBatch) * sizeof(struct wgf_drop_key));
        values_.resize((at + kDrainBatch) * sizeof(struct wgf_drop));
        __u32 n = kDrainBatch;
        int rc = bpf_map_lookup_and_delete_batch(fd, first ? nullptr : &token, &token,
                                                 &keys_[at * sizeof(struct wgf_drop_key)],
                                                 &values_[at * sizeof(struct wgf_drop)], &n, nullptr);
        int err = rc ? errno : 0;
        if (err && err != ENOENT) return Fail(err, "draining the drop map failed");
        count_ += n;
        first = false;
        if (err == ENOENT) break;
      }
    }
    void OnOK() override {
      Napi::Env env = Env();
      Napi::Object r = Napi::Object::New(env);
      Napi::ArrayBuffer k = Napi::ArrayBuffer::New(env, count_ * sizeof(struct wgf_drop_key));
      Napi::ArrayBuffer v = Napi::ArrayBuffer::New(env, count_ * sizeof(struct wgf_drop));
      if (count_) {
        memcpy(k.Data(), keys_.data(), k.ByteLength());
        memcpy(v.Data(), values_.data(), v.ByteLength());
      }
      r.Set("count", Napi::Number::New(env, static_cast<double>(count_)));
      r.Set("keys", k);
      r.Set("values", v);
      p_->Unref2();
      deferred_.Resolve(r);
    }
    void OnError(const Napi::Error &) override {
      p_->Unref2();
      deferred_.Reject(ErrnoError(Env(), err_, what_).Value());
    }

   private:
    void Fail(int err, const char *what) {
      err_ = err;
      what_ = what;
      SetError(what);
    }
    Napi::Promise::Deferred deferred_;
    DropProbe *p_;
    std::vector<uint8_t> keys_, values_;
    size_t count_ = 0;
    int err_ = 0;
    std::string what_;
  };

  // drain() -> Promise<{count, keys, values}>: switch the probe to the other map and read and
  // empty the one it wrote until now.
  Napi::Value Drain(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    if (draining_) throw Napi::Error::New(env, "drain() is already in progress: await it first");
    draining_ = true;
    auto *w = new DrainWorker(env, this);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // reasons() -> ArrayBuffer of WGF_DROP_REASONS x struct wgf_drop_count, summed over CPUs.
  Napi::Value Reasons(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, WGF_DROP_REASONS * sizeof(struct wgf_drop_count));
    auto *sum = static_cast<struct wgf_drop_count *>(out.Data());
    memset(sum, 0, out.ByteLength());
    std::vector<struct wgf_drop_count> per(ncpus_);
    for (__u32 slot = 0; slot < WGF_DROP_REASONS; slot++) {
      if (bpf_map_lookup_elem(reasons_fd_, &slot, per.data())) throw ErrnoError(env, errno, "cannot read the drop reason counters");
      for (int c = 0; c < ncpus_; c++) {
        sum[slot].packets += per[c].packets;
        sum[slot].bytes += per[c].bytes;
      }
    }
    return out;
  }

  // stats() -> ArrayBuffer of one struct wgf_drop_stats, summed over CPUs.
  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    std::vector<struct wgf_drop_stats> per(ncpus_);
    __u32 zero = 0;
    if (bpf_map_lookup_elem(stats_fd_, &zero, per.data())) throw ErrnoError(env, errno, "cannot read the drop probe's statistics");
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, sizeof(struct wgf_drop_stats));
    auto *s = static_cast<__u64 *>(out.Data());
    memset(s, 0, out.ByteLength());
    for (int c = 0; c < ncpus_; c++) {
      const __u64 *f = reinterpret_cast<const __u64 *>(&per[c]);
      for (int i = 0; i < WGF_DROP_STATS_FIELDS; i++) s[i] += f[i];
    }
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (draining_)
      closing_ = true;  // the drain in flight finishes first
    else
      Destroy();
    return info.Env().Undefined();
  }

  void Destroy() {
    if (link_) bpf_link__destroy(link_);
    link_ = nullptr;
    if (obj_) bpf_object__close(obj_);
    obj_ = nullptr;
    drops_fd_[0] = drops_fd_[1] = config_fd_ = reasons_fd_ = stats_fd_ = -1;
    if (barrier_fd_ >= 0) close(barrier_fd_);
    if (barrier_inner_fd_ >= 0) close(barrier_inner_fd_);
    barrier_fd_ = barrier_inner_fd_ = -1;
  }

  struct bpf_object *obj_ = nullptr;
  struct bpf_program *prog_ = nullptr;
  struct bpf_link *link_ = nullptr;
  int drops_fd_[2] = {-1, -1};
  int config_fd_ = -1, reasons_fd_ = -1, stats_fd_ = -1;
  int barrier_fd_ = -1, barrier_inner_fd_ = -1;
  int ncpus_ = 0;
  bool draining_ = false;
  bool closing_ = false;
  std::mutex config_mu_;
};

// dropReasonNames() -> { [value]: name } of the running kernel's enum skb_drop_reason (its BTF),
// names without the SKB_DROP_REASON_ prefix; {} when the kernel has no BTF or no such enum.
Napi::Value DropReasonNames(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  struct btf *btf = btf__load_vmlinux_btf();
  if (!btf) return out;
  __s32 id = btf__find_by_name_kind(btf, "skb_drop_reason", BTF_KIND_ENUM);
  if (id > 0) {
    const struct btf_type *t = btf__type_by_id(btf, id);
    const struct btf_enum *e = btf_enum(t);
    for (int i = 0; i < btf_vlen(t); i++) {
      const char *name = btf__name_by_offset(btf, e[i].name_off);
      if (!name) continue;
      const char *prefix = "SKB_DROP_REASON_";
      if (strncmp(name, prefix, strlen(prefix)) == 0) name += strlen(prefix);
      out.Set(Napi::Number::New(env, static_cast<double>(static_cast<__u32>(e[i].val))), Napi::String::New(env, name));
    }
  }
  btf__free(btf);
  return out;
}

}  // namespace

void register_drops(Napi::Env env, Napi::Object exports) {
  DropProbe::Init(env, exports);
  exports.Set("dropReasonNames", Napi::Function::New(env, DropReasonNames));
  Napi::Object layout = exports.Get("layout").As<Napi::Object>();
#define WGF_STRUCT(s) Napi::Object s##_o = Napi::Object::New(env); s##_o.Set("size", (uint32_t)sizeof(struct s)); layout.Set(#s, s##_o)
#define WGF_FIELD(s, f) s##_o.Set(#f, (uint32_t)offsetof(struct s, f))
  WGF_STRUCT(wgf_drop_key);
  WGF_FIELD(wgf_drop_key, saddr); WGF_FIELD(wgf_drop_key, daddr); WGF_FIELD(wgf_drop_key, sport); WGF_FIELD(wgf_drop_key, dport);
  WGF_FIELD(wgf_drop_key, proto); WGF_FIELD(wgf_drop_key, kind); WGF_FIELD(wgf_drop_key, family); WGF_FIELD(wgf_drop_key, dir);
  WGF_FIELD(wgf_drop_key, ifindex);
  WGF_STRUCT(wgf_drop);
  WGF_FIELD(wgf_drop, first_ns); WGF_FIELD(wgf_drop, last_ns); WGF_FIELD(wgf_drop, packets); WGF_FIELD(wgf_drop, bytes);
  WGF_FIELD(wgf_drop, reason); WGF_FIELD(wgf_drop, flags);
  WGF_STRUCT(wgf_drop_count);
  WGF_FIELD(wgf_drop_count, packets); WGF_FIELD(wgf_drop_count, bytes);
  WGF_STRUCT(wgf_drop_config);
  WGF_FIELD(wgf_drop_config, netns); WGF_FIELD(wgf_drop_config, active); WGF_FIELD(wgf_drop_config, watch);
  WGF_STRUCT(wgf_drop_stats);
  WGF_FIELD(wgf_drop_stats, matched); WGF_FIELD(wgf_drop_stats, map_full); WGF_FIELD(wgf_drop_stats, map_full_bytes);
  WGF_FIELD(wgf_drop_stats, unparsed);
#undef WGF_FIELD
#undef WGF_STRUCT
}

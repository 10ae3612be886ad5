// wgflow native addon: loads the BPF object, attaches it to interfaces, and moves kernel
// records to JavaScript in batches (one ArrayBuffer per call, never one call per record).
//
// Layouts come from bpf/wgflow.h; src/datapath/records.ts decodes the buffers returned here.

#include <napi.h>

#include "bpf_util.h"
#include "drops.h"
#include "json_line.h"
#include "wg_netlink.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <net/if_arp.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "../../bpf/wgflow.h"
}

namespace {

// Not in Debian 12's UAPI headers (kernel 6.6+); values are ABI.
constexpr int kTcxIngress = 46;
constexpr int kTcxEgress = 47;
// clsact fallback: our filters' handle and priority, so a restart can find and replace them.
constexpr __u32 kTcHandle = 0x5766;   // "Wf"
constexpr __u32 kTcPriority = 0x5766;
constexpr size_t kBatchEntries = 4096;

struct Attachment {
  int ifindex = 0;
  std::string mode;  // "tcx" or "clsact"
  int l3_offset = 0;
  int link_fd[2] = {-1, -1};  // TCX links: closing them detaches
};

// ARPHRD type of an interface of this process's network namespace (sysfs may show another one).
int LinkType(const std::string &name, int *type) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  int rc = ioctl(fd, SIOCGIFHWADDR, &ifr);
  int err = rc < 0 ? -errno : 0;
  close(fd);
  if (!err) *type = ifr.ifr_hwaddr.sa_family;
  return err;
}

class Datapath;

// Collects ring records for one poll() call. Runs on a libuv threadpool thread.
struct RingBatch {
  std::vector<uint8_t> data;
  size_t max_records = 0;
  size_t records = 0;
};

int OnRingRecord(void *ctx, void *data, size_t size) {
  auto *batch = static_cast<RingBatch *>(ctx);
  if (size != sizeof(struct wgf_record)) return 0;  // cannot happen: one record type
  const uint8_t *p = static_cast<const uint8_t *>(data);
  batch->data.insert(batch->data.end(), p, p + size);
  // libbpf has already consumed this record; a negative return just stops the loop (batch full).
  return ++batch->records >= batch->max_records ? -ENOSPC : 0;
}

class Datapath : public Napi::ObjectWrap<Datapath> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  explicit Datapath(const Napi::CallbackInfo &info);
  ~Datapath() override { Destroy(); }

  // Shared with the async workers below.
  int flows_fd(int family) const { return family == 6 ? flows6_fd_ : flows4_fd_; }
  struct ring_buffer *ring() const { return ring_; }
  RingBatch *ring_batch() { return &ring_batch_; }
  void PollDone() {
    polling_ = false;
    if (closing_) Destroy();
  }

 private:
  Napi::Value Attach(const Napi::CallbackInfo &info);
  Napi::Value Detach(const Napi::CallbackInfo &info);
  Napi::Value Attachments(const Napi::CallbackInfo &info);
  Napi::Value SetConfig(const Napi::CallbackInfo &info);
  Napi::Value GetConfig(const Napi::CallbackInfo &info);
  Napi::Value Poll(const Napi::CallbackInfo &info);
  Napi::Value ReadFlows(const Napi::CallbackInfo &info);
  Napi::Value DeleteFlows(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value MapInfo(const Napi::CallbackInfo &info);
  Napi::Value TestRun(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);

  void CheckOpen(Napi::Env env) const {
    if (!obj_ || closing_) throw Napi::Error::New(env, "the datapath is closed");
  }
  int DetachOne(Attachment &a);
  void Destroy();

  struct bpf_object *obj_ = nullptr;
  struct ring_buffer *ring_ = nullptr;
  RingBatch ring_batch_;
  int flows4_fd_ = -1, flows6_fd_ = -1, config_fd_ = -1, stats_fd_ = -1;
  std::map<std::string, Attachment> attached_;
  bool polling_ = false;
  bool closing_ = false;
};

struct bpf_map *MapByName(struct bpf_object *obj, const char *name) {
  struct bpf_map *m = bpf_object__find_map_by_name(obj, name);
  return m;
}

// new Datapath({ objectPath, maxFlows, maxFlowsV6, ringBytes, pinDir })
Datapath::Datapath(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Datapath>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "Datapath: options object expected");
  Napi::Object o = info[0].As<Napi::Object>();
  std::string path = o.Get("objectPath").As<Napi::String>();
  uint32_t max4 = o.Get("maxFlows").As<Napi::Number>().Uint32Value();
  uint32_t max6 = o.Get("maxFlowsV6").As<Napi::Number>().Uint32Value();
  uint32_t ring_bytes = o.Get("ringBytes").As<Napi::Number>().Uint32Value();
  std::string pin_dir = o.Has("pinDir") && o.Get("pinDir").IsString()
                            ? o.Get("pinDir").As<Napi::String>().Utf8Value()
                            : "";

  libbpf_set_print(CaptureLibbpfLog);
  TakeLog();
  obj_ = bpf_object__open_file(path.c_str(), nullptr);
  if (!obj_) {
    int err = errno;
    throw ErrnoError(env, err, "cannot open BPF object " + path + ": " + TakeLog());
  }
  struct bpf_map *m4 = MapByName(obj_, "wgf_flows4"), *m6 = MapByName(obj_, "wgf_flows6"),
                 *ev = MapByName(obj_, "wgf_events");
  if (!m4 || !m6 || !ev) {
    Destroy();
    throw Napi::Error::New(env, "BPF object " + path + " lacks wgflow's maps (wrong file?)");
  }
  bpf_map__set_max_entries(m4, max4);
  bpf_map__set_max_entries(m6, max6);
  bpf_map__set_max_entries(ev, ring_bytes);
  if (!pin_dir.empty()) {
    // Pinned flow maps survive a restart: the next daemon adopts in-progress flows.
    // libbpf reuses an existing pin if it is compatible and refuses otherwise.
    for (struct bpf_map *m : {m4, m6}) {
      std::string p = pin_dir + "/" + bpf_map__name(m);
      bpf_map__set_pin_path(m, p.c_str());
    }
  }
  int err = bpf_object__load(obj_);
  if (err) {
    std::string log = TakeLog();
    Destroy();
    std::string hint = PrivilegeHint(err);
    if (!pin_dir.empty() && log.find("couldn't reuse pinned map") != std::string::npos)
      hint = "; the maps pinned in " + pin_dir +
             " have another size or layout: remove them or start with the same flow limits";
    throw ErrnoError(env, err, "loading the BPF programs failed" + hint + "\n" + log);
  }
  flows4_fd_ = bpf_map__fd(m4);
  flows6_fd_ = bpf_map__fd(m6);
  config_fd_ = bpf_map__fd(MapByName(obj_, "wgf_config"));
  stats_fd_ = bpf_map__fd(MapByName(obj_, "wgf_stats"));

  struct wgf_config cfg = {1, 4096};  // counting on; wake the consumer every 4 KiB
  __u32 zero = 0;
  if (bpf_map_update_elem(config_fd_, &zero, &cfg, BPF_ANY)) {
    err = errno;
    Destroy();
    throw ErrnoError(env, err, "cannot write the BPF config map");
  }
  ring_ = ring_buffer__new(bpf_map__fd(ev), OnRingRecord, &ring_batch_, nullptr);
  if (!ring_) {
    err = errno;
    Destroy();
    throw ErrnoError(env, err, "cannot map the BPF ring buffer");
  }
}

void Datapath::Destroy() {
  for (auto &kv : attached_) DetachOne(kv.second);
  attached_.clear();
  if (ring_) ring_buffer__free(ring_);
  ring_ = nullptr;
  if (obj_) bpf_object__close(obj_);
  obj_ = nullptr;
  flows4_fd_ = flows6_fd_ = config_fd_ = stats_fd_ = -1;
}

int Datapath::DetachOne(Attachment &a) {
  int rc = 0;
  if (a.mode == "tcx") {
    for (int &fd : a.link_fd)
      if (fd >= 0) {
        close(fd);
        fd = -1;
      }
    return 0;
  }
  for (auto point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = a.ifindex, .attach_point = point);
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
    int err = bpf_tc_detach(&hook, &opts);
    // Gone already (device deleted, or removed by hand) is fine.
    if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL) rc = err;
  }
  return rc;
}

// attach(ifname, mode: 'auto'|'tcx'|'clsact') -> { ifindex, mode, l3Offset }
Napi::Value Datapath::Attach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = info[0].As<Napi::String>();
  std::string want = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value()
                                                              : "auto";
  if (attached_.count(name))
    throw ErrnoError(env, EEXIST, "already attached to " + name + " (detach it first)");
  int ifindex = if_nametoindex(name.c_str());
  if (!ifindex) throw ErrnoError(env, ENODEV, "interface " + name + " does not exist in this network namespace");
  if (ifindex > 0xffff)
    throw ErrnoError(env, ERANGE, "interface " + name + " has ifindex " + std::to_string(ifindex) +
                                      " but flow keys hold 16 bits");
  int type = 0;
  int err = LinkType(name, &type);
  if (err) throw ErrnoError(env, err, "cannot read the link type of " + name);
  int l3 = 0;
  if (type == ARPHRD_ETHER || type == ARPHRD_LOOPBACK)
    l3 = 14;
  else if (type == ARPHRD_NONE)
    l3 = 0;  // WireGuard, tun: packets start at the IP header
  else
    throw ErrnoError(env, ENOTSUP, "interface " + name + " has link type " + std::to_string(type) +
                                       "; wgflow supports WireGuard/tun (none) and Ethernet");

  struct bpf_program *ping = bpf_object__find_program_by_name(obj_, l3 ? "wgflow_ingress_eth" : "wgflow_ingress");
  struct bpf_program *pegr = bpf_object__find_program_by_name(obj_, l3 ? "wgflow_egress_eth" : "wgflow_egress");
  int fds[2] = {bpf_program__fd(ping), bpf_program__fd(pegr)};

  Attachment a;
  a.ifindex = ifindex;
  a.l3_offset = l3;
  if (want == "auto" || want == "tcx") {
    int l0 = bpf_link_create(fds[0], ifindex, (enum bpf_attach_type)kTcxIngress, nullptr);
    int e0 = l0 < 0 ? -errno : 0;
    int l1 = l0 >= 0 ? bpf_link_create(fds[1], ifindex, (enum bpf_attach_type)kTcxEgress, nullptr) : -1;
    int e1 = l0 >= 0 && l1 < 0 ? -errno : 0;
    if (l0 >= 0 && l1 >= 0) {
      a.mode = "tcx";
      a.link_fd[0] = l0;
      a.link_fd[1] = l1;
    } else {
      if (l0 >= 0) close(l0);
      err = e0 ? e0 : e1;
      if (want == "tcx" || err == -EPERM || err == -EACCES)
        throw ErrnoError(env, err, "attaching TCX links to " + name + " failed" + PrivilegeHint(err));
    }
  }
  if (a.mode.empty()) {
    // Classic clsact: filters outlive the process, so replace any left by an earlier run.
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    err = bpf_tc_hook_create(&hook);
    if (err && err != -EEXIST)
      throw ErrnoError(env, err, "creating the clsact qdisc on " + name + " failed" + PrivilegeHint(err));
    a.mode = "clsact";
    int i = 0;
    for (auto point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
      hook.attach_point = point;
      DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = fds[i++], .flags = BPF_TC_F_REPLACE,
                          .handle = kTcHandle, .priority = kTcPriority);
      err = bpf_tc_attach(&hook, &opts);
      if (err) {
        DetachOne(a);
        throw ErrnoError(env, err, "attaching the clsact filter to " + name + " failed" + PrivilegeHint(err));
      }
    }
  }
  attached_[name] = a;
  Napi::Object r = Napi::Object::New(env);
  r.Set("ifindex", ifindex);
  r.Set("mode", a.mode);
  r.Set("l3Offset", l3);
  return r;
}

Napi::Value Datapath::Detach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = info[0].As<Napi::String>();
  auto it = attached_.find(name);
  if (it == attached_.end()) throw ErrnoError(env, ENOENT, "not attached to " + name);
  int err = DetachOne(it->second);
  attached_.erase(it);
  if (err) throw ErrnoError(env, err, "detaching from " + name + " failed");
  return env.Undefined();
}

Napi::Value Datapath::Attachments(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Array arr = Napi::Array::New(env);
  uint32_t i = 0;
  for (auto &kv : attached_) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", kv.first);
    o.Set("ifindex", kv.second.ifindex);
    o.Set("mode", kv.second.mode);
    o.Set("l3Offset", kv.second.l3_offset);
    arr.Set(i++, o);
  }
  return arr;
}

// setConfig({ counting: boolean, wakeupBatch?: number })
Napi::Value Datapath::SetConfig(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  Napi::Object o = info[0].As<Napi::Object>();
  __u32 zero = 0;
  struct wgf_config cfg;
  if (bpf_map_lookup_elem(config_fd_, &zero, &cfg)) throw ErrnoError(env, errno, "cannot read the BPF config map");
  if (o.Has("counting")) cfg.counting = o.Get("counting").ToBoolean() ? 1 : 0;
  if (o.Has("wakeupBatch")) cfg.wakeup_batch = o.Get("wakeupBatch").As<Napi::Number>().Uint32Value();
  // One array element written whole: the programs see the old or the new config, never a mix.
  if (bpf_map_update_elem(config_fd_, &zero, &cfg, BPF_ANY)) throw ErrnoError(env, errno, "cannot write the BPF config map");
  return env.Undefined();
}

Napi::Value Datapath::GetConfig(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  __u32 zero = 0;
  struct wgf_config cfg;
  if (bpf_map_lookup_elem(config_fd_, &zero, &cfg)) throw ErrnoError(env, errno, "cannot read the BPF config map");
  Napi::Object o = Napi::Object::New(env);
  o.Set("counting", cfg.counting != 0);
  o.Set("wakeupBatch", cfg.wakeup_batch);
  return o;
}

// poll(timeoutMs, maxRecords) -> Promise<ArrayBuffer> of struct wgf_record, possibly empty.
class PollWorker : public Napi::AsyncWorker {
 public:
  PollWorker(Napi::Env env, Datapath *dp, int timeout_ms, size_t max_records)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), dp_(dp),
        timeout_ms_(timeout_ms) {
    dp_->Ref();
    batch_ = dp_->ring_batch();
    batch_->data.clear();
    batch_->records = 0;
    batch_->max_records = max_records;
    batch_->data.reserve(std::min<size_t>(max_records, 65536) * sizeof(struct wgf_record));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    // Take what is waiting first: producers batch their wake-ups, so epoll may stay silent.
    int n = ring_buffer__consume(dp_->ring());
    if (n == 0 && batch_->records == 0) {
      n = ring_buffer__poll(dp_->ring(), timeout_ms_);
      if (n >= 0 && batch_->records == 0) n = ring_buffer__consume(dp_->ring());
    }
    if (n < 0 && n != -ENOSPC && n != -EINTR) {
      err_ = n;
      SetError("ring buffer poll failed");
    }
  }
  // Into the caller's buffer (reused from poll to poll: no garbage buffer per batch); the
  // promise then resolves to the byte count.
  void Into(Napi::ArrayBuffer into) {
    into_ref_ = Napi::Persistent(into);
  }
  void OnOK() override {
    Napi::Env env = Env();
    size_t n = batch_->data.size();
    if (!into_ref_.IsEmpty()) {
      Napi::ArrayBuffer into = into_ref_.Value();
      // The batch holds at most max_records, which the caller sized the buffer for.
      size_t fit = std::min(n, into.ByteLength() / sizeof(struct wgf_record) * sizeof(struct wgf_record));
      if (fit) memcpy(into.Data(), batch_->data.data(), fit);
      batch_->data.clear();
      Finish();
      deferred_.Resolve(Napi::Number::New(env, static_cast<double>(fit)));
      return;
    }
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, n);
    if (n) memcpy(ab.Data(), batch_->data.data(), n);
    batch_->data.clear();
    Finish();
    deferred_.Resolve(ab);
  }
  void OnError(const Napi::Error &) override {
    Finish();
    deferred_.Reject(ErrnoError(Env(), err_, "ring buffer poll failed").Value());
  }

 private:
  void Finish() {
    dp_->PollDone();
    dp_->Unref();
  }
  Napi::Promise::Deferred deferred_;
  Datapath *dp_;
  RingBatch *batch_;
  int timeout_ms_;
  int err_ = 0;
  Napi::Reference<Napi::ArrayBuffer> into_ref_;
};

Napi::Value Datapath::Poll(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  if (polling_) throw Napi::Error::New(env, "poll() is already in progress: await it before polling again");
  int timeout = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 100;
  size_t max_records = info.Length() > 1 ? info[1].As<Napi::Number>().Uint32Value() : 65536;
  if (max_records == 0) max_records = 1;
  bool into = info.Length() > 2 && info[2].IsArrayBuffer();
  if (into) {
    size_t room = info[2].As<Napi::ArrayBuffer>().ByteLength() / sizeof(struct wgf_record);
    if (room == 0) throw Napi::RangeError::New(env, "the poll buffer holds no record");
    max_records = std::min(max_records, room);
  }
  polling_ = true;
  auto *w = new PollWorker(env, this, timeout, max_records);
  if (into) w->Into(info[2].As<Napi::ArrayBuffer>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Reads (or drains) a whole flow map with batched syscalls, off the JS thread.
// Memory for one map read: an anonymous mapping, handed to JavaScript as the ArrayBuffer itself
// (no copy). Pages the walk does not fill are never committed, and all of it goes back to the
// kernel when JavaScript drops the buffer. Vectors grown per drain and copied out left tens of MB
// per drain in malloc's arenas: hundreds of MB of RSS at a million flows.
class MappedBuffer {
 public:
  MappedBuffer() = default;
  MappedBuffer(const MappedBuffer &) = delete;
  MappedBuffer &operator=(const MappedBuffer &) = delete;
  ~MappedBuffer() {
    if (data_) munmap(data_, len_);
  }

  // At least want bytes (kept contents); false when the kernel refuses.
  bool Reserve(size_t want) {
    if (want <= len_) return true;
    want = (want + 4095) & ~size_t(4095);
    void *p = data_ ? mremap(data_, len_, want, MREMAP_MAYMOVE)
                    : mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    data_ = static_cast<uint8_t *>(p);
    len_ = want;
    return true;
  }

  uint8_t *data() { return data_; }

  // An ArrayBuffer of the first used bytes that owns the mapping from now on.
  Napi::ArrayBuffer Hand(Napi::Env env, size_t used) {
    if (!data_ || used == 0) return Napi::ArrayBuffer::New(env, 0);
    uint8_t *d = data_;
    size_t *len = new size_t(len_);
    data_ = nullptr;
    len_ = 0;
    return Napi::ArrayBuffer::New(env, d, used, [](Napi::Env, void *data, size_t *mapped) {
      munmap(data, *mapped);
      delete mapped;
    }, len);
  }

 private:
  uint8_t *data_ = nullptr;
  size_t len_ = 0;
};

// Entries a flow map can hold (its max_entries), 65,536 if the kernel does not say.
size_t MapCapacity(int fd) {
  struct bpf_map_info mi;
  __u32 len = sizeof(mi);
  memset(&mi, 0, sizeof(mi));
  if (bpf_obj_get_info_by_fd(fd, &mi, &len) || mi.max_entries == 0) return 65536;
  return mi.max_entries;
}

class ReadFlowsWorker : public Napi::AsyncWorker {
 public:
  // limit 0: the whole map. Otherwise stop after at least limit entries (whole batches) and
  // return the cursor: the next call passes it as token to go on from there.
  ReadFlowsWorker(Napi::Env env, Datapath *dp, int family, bool drain, size_t limit, bool has_token, __u32 token)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), dp_(dp),
        fd_(dp->flows_fd(family)), drain_(drain),
        key_size_(family == 6 ? sizeof(struct wgf_key6) : sizeof(struct wgf_key4)),
        capacity_((limit ? limit : MapCapacity(fd_)) + kBatchEntries), limit_(limit),
        first_(!has_token), token_(token) {
    dp_->Ref();
  }
  // Into the caller's buffers (reused from chunk to chunk, so a drain leaves no garbage buffers
  // behind): as many whole batches as fit. The buffers are held until the read is done.
  void Into(Napi::ArrayBuffer keys, Napi::ArrayBuffer values) {
    keys_ref_ = Napi::Persistent(keys);
    values_ref_ = Napi::Persistent(values);
    ext_keys_ = static_cast<uint8_t *>(keys.Data());
    ext_values_ = static_cast<uint8_t *>(values.Data());
    size_t fit = std::min(keys.ByteLength() / key_size_, values.ByteLength() / sizeof(struct wgf_flow));
    capacity_ = fit;
    limit_ = fit >= kBatchEntries ? fit - kBatchEntries + 1 : 0;
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    __u32 token = token_;
    bool first = first_;
    if (ext_keys_ && capacity_ < kBatchEntries) {
      err_ = -EINVAL;
      SetError("the read buffers hold less than one batch");
      return;
    }
    for (;;) {
      if (limit_ && count_ >= limit_) {
        more_ = true;  // stopped early: the caller goes on from token
        break;
      }
      size_t at = count_;
      uint8_t *keys, *values;
      if (ext_keys_) {
        keys = ext_keys_;
        values = ext_values_;
      } else {
        // Room for a whole batch; more than the map holds only if entries moved during the walk.
        if (at + kBatchEntries > capacity_) capacity_ = 2 * (at + kBatchEntries);
        if (!keys_.Reserve(capacity_ * key_size_) || !values_.Reserve(capacity_ * sizeof(struct wgf_flow))) {
          err_ = -ENOMEM;
          SetError("no memory for the flow map read");
          return;
        }
        keys = keys_.data();
        values = values_.data();
      }
      __u32 n = kBatchEntries;
      int rc = drain_ ? bpf_map_lookup_and_delete_batch(fd_, first ? nullptr : &token, &token,
                                                        keys + at * key_size_,
                                                        values + at * sizeof(struct wgf_flow), &n, nullptr)
                      : bpf_map_lookup_batch(fd_, first ? nullptr : &token, &token,
                                             keys + at * key_size_,
                                             values + at * sizeof(struct wgf_flow), &n, nullptr);
      int err = rc ? -errno : 0;
      if (err && err != -ENOENT) {
        err_ = err;
        SetError("flow map batch read failed");
        return;
      }
      count_ += n;
      first = false;
      if (err == -ENOENT) break;  // walked every bucket
    }
    token_ = token;
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("count", Napi::Number::New(env, count_));
    r.Set("more", Napi::Boolean::New(env, more_));
    r.Set("token", Napi::Number::New(env, token_));
    if (ext_keys_) {
      r.Set("keys", keys_ref_.Value());
      r.Set("values", values_ref_.Value());
    } else {
      r.Set("keys", keys_.Hand(env, count_ * key_size_));
      r.Set("values", values_.Hand(env, count_ * sizeof(struct wgf_flow)));
    }
    dp_->Unref();
    deferred_.Resolve(r);
  }
  void OnError(const Napi::Error &) override {
    dp_->Unref();
    deferred_.Reject(ErrnoError(Env(), err_, drain_ ? "draining the flow map failed" : "reading the flow map failed").Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Datapath *dp_;
  int fd_;
  bool drain_;
  size_t key_size_;
  size_t capacity_;
  size_t limit_;
  bool first_;
  __u32 token_;
  bool more_ = false;
  size_t count_ = 0;
  MappedBuffer keys_, values_;
  Napi::Reference<Napi::ArrayBuffer> keys_ref_, values_ref_;
  uint8_t *ext_keys_ = nullptr;
  uint8_t *ext_values_ = nullptr;
  int err_ = 0;
};

// readFlows(family: 4|6, drain: boolean, limit?: number, token?: number, keys?: ArrayBuffer,
//           values?: ArrayBuffer) -> Promise<{count, keys, values, more, token}>
// With a limit, reads about that many entries (whole batches) and says whether more remain; the
// next call passes the returned token. With keys and values buffers, reads as many whole batches
// as they hold into them (the limit is then theirs). A drain of a million flows then needs one
// chunk of memory, reused, not the whole map's worth at once.
Napi::Value Datapath::ReadFlows(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  int family = info[0].As<Napi::Number>().Int32Value();
  if (family != 4 && family != 6) throw Napi::RangeError::New(env, "family must be 4 or 6");
  bool drain = info.Length() > 1 && info[1].ToBoolean();
  double limit = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  if (!(limit >= 0 && limit <= (1u << 30))) throw Napi::RangeError::New(env, "limit must be 0..2^30 entries");
  bool has_token = info.Length() > 3 && info[3].IsNumber();
  double token = has_token ? info[3].As<Napi::Number>().DoubleValue() : 0;
  if (has_token && !(token >= 0 && token <= 4294967295.0)) throw Napi::RangeError::New(env, "token must be a 32-bit cursor");
  bool into = info.Length() > 5 && info[4].IsArrayBuffer() && info[5].IsArrayBuffer();
  if (!into && info.Length() > 4 && !info[4].IsUndefined()) throw Napi::TypeError::New(env, "keys and values must both be ArrayBuffers");
  auto *w = new ReadFlowsWorker(env, this, family, drain, static_cast<size_t>(limit), has_token,
                                static_cast<__u32>(token));
  if (into) w->Into(info[4].As<Napi::ArrayBuffer>(), info[5].As<Napi::ArrayBuffer>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Deletes chosen flows and returns their final values atomically (no packet counted after the
// read is lost): one lookup_and_delete per key, off the JS thread.
class DeleteFlowsWorker : public Napi::AsyncWorker {
 public:
  DeleteFlowsWorker(Napi::Env env, Datapath *dp, int family, const uint8_t *keys, size_t n)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), dp_(dp),
        fd_(dp->flows_fd(family)),
        key_size_(family == 6 ? sizeof(struct wgf_key6) : sizeof(struct wgf_key4)),
        keys_(keys, keys + n * key_size_), values_(n * sizeof(struct wgf_flow)), found_(n) {
    dp_->Ref();
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    size_t n = found_.size();
    for (size_t i = 0; i < n; i++) {
      int rc = bpf_map_lookup_and_delete_elem(fd_, &keys_[i * key_size_], &values_[i * sizeof(struct wgf_flow)]);
      found_[i] = rc == 0;
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    Napi::ArrayBuffer v = Napi::ArrayBuffer::New(env, values_.size());
    if (!values_.empty()) memcpy(v.Data(), values_.data(), values_.size());
    Napi::Uint8Array f = Napi::Uint8Array::New(env, found_.size());
    for (size_t i = 0; i < found_.size(); i++) f[i] = found_[i];
    r.Set("values", v);
    r.Set("found", f);
    dp_->Unref();
    deferred_.Resolve(r);
  }

 private:
  Napi::Promise::Deferred deferred_;
  Datapath *dp_;
  int fd_;
  size_t key_size_;
  std::vector<uint8_t> keys_, values_;
  std::vector<uint8_t> found_;
};

// deleteFlows(family, keys: ArrayBuffer|TypedArray) -> Promise<{values, found}>
Napi::Value Datapath::DeleteFlows(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  int family = info[0].As<Napi::Number>().Int32Value();
  if (family != 4 && family != 6) throw Napi::RangeError::New(env, "family must be 4 or 6");
  size_t key_size = family == 6 ? sizeof(struct wgf_key6) : sizeof(struct wgf_key4);
  const uint8_t *data;
  size_t len;
  if (info[1].IsArrayBuffer()) {
    auto ab = info[1].As<Napi::ArrayBuffer>();
    data = static_cast<const uint8_t *>(ab.Data());
    len = ab.ByteLength();
  } else if (info[1].IsTypedArray()) {
    auto ta = info[1].As<Napi::TypedArray>();
    data = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    len = ta.ByteLength();
  } else {
    throw Napi::TypeError::New(env, "deleteFlows: keys must be an ArrayBuffer or a typed array");
  }
  if (len % key_size) throw Napi::RangeError::New(env, "deleteFlows: keys length is not a multiple of the key size");
  auto *w = new DeleteFlowsWorker(env, this, family, data, len / key_size);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// stats() -> ArrayBuffer holding one struct wgf_stats summed over CPUs.
Napi::Value Datapath::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) throw ErrnoError(env, -ncpu, "cannot count possible CPUs");
  std::vector<struct wgf_stats> per_cpu(ncpu);
  __u32 zero = 0;
  if (bpf_map_lookup_elem(stats_fd_, &zero, per_cpu.data())) throw ErrnoError(env, errno, "cannot read the BPF statistics");
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, sizeof(struct wgf_stats));
  auto *sum = static_cast<__u64 *>(ab.Data());
  memset(sum, 0, sizeof(struct wgf_stats));
  for (int c = 0; c < ncpu; c++) {
    const __u64 *f = reinterpret_cast<const __u64 *>(&per_cpu[c]);
    for (int i = 0; i < WGF_STATS_FIELDS; i++) sum[i] += f[i];
  }
  return ab;
}

// mapInfo() -> [{ name, type, keySize, valueSize, maxEntries, id }] for memory accounting.
Napi::Value Datapath::MapInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  Napi::Array arr = Napi::Array::New(env);
  uint32_t i = 0;
  struct bpf_map *m;
  bpf_object__for_each_map(m, obj_) {
    struct bpf_map_info mi;
    __u32 len = sizeof(mi);
    memset(&mi, 0, sizeof(mi));
    if (bpf_obj_get_info_by_fd(bpf_map__fd(m), &mi, &len)) continue;
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_map__name(m));
    o.Set("id", mi.id);
    o.Set("keySize", mi.key_size);
    o.Set("valueSize", mi.value_size);
    o.Set("maxEntries", mi.max_entries);
    arr.Set(i++, o);
  }
  return arr;
}

// BPF_PROG_TEST_RUN of one program of obj: { retval, durationNs }. The kernel always supplies an
// Ethernet frame; gsoSegs/gsoSize go into the __sk_buff context.
Napi::Value RunTest(const Napi::CallbackInfo &info, struct bpf_object *obj) {
  Napi::Env env = info.Env();
  std::string prog_name = info[0].As<Napi::String>();
  Napi::Buffer<uint8_t> pkt = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Object o = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
  struct bpf_program *prog = bpf_object__find_program_by_name(obj, prog_name.c_str());
  if (!prog) throw ErrnoError(env, ENOENT, "no BPF program named " + prog_name);
  struct __sk_buff ctx;
  memset(&ctx, 0, sizeof(ctx));
  ctx.gso_segs = o.Has("gsoSegs") ? o.Get("gsoSegs").As<Napi::Number>().Uint32Value() : 0;
  ctx.gso_size = o.Has("gsoSize") ? o.Get("gsoSize").As<Napi::Number>().Uint32Value() : 0;
  DECLARE_LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt.Data(), .data_size_in = (__u32)pkt.Length(),
                      .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
                      .repeat = o.Has("repeat") ? (int)o.Get("repeat").As<Napi::Number>().Uint32Value() : 1);
  int err = bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
  if (err) throw ErrnoError(env, errno, "BPF_PROG_TEST_RUN of " + prog_name + " failed");
  Napi::Object r = Napi::Object::New(env);
  r.Set("retval", Napi::Number::New(env, (int32_t)opts.retval));
  r.Set("durationNs", Napi::Number::New(env, opts.duration));
  return r;
}

// testRun(program, packet, { repeat, gsoSegs, gsoSize }) -> { retval, durationNs }
Napi::Value Datapath::TestRun(const Napi::CallbackInfo &info) {
  CheckOpen(info.Env());
  return RunTest(info, obj_);
}

Napi::Value Datapath::Close(const Napi::CallbackInfo &info) {
  // A poll in flight still uses the ring: free everything when it returns.
  closing_ = true;
  if (!polling_) Destroy();
  return info.Env().Undefined();
}

Napi::Object Datapath::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "Datapath",
                                   {
                                       InstanceMethod("attach", &Datapath::Attach),
                                       InstanceMethod("detach", &Datapath::Detach),
                                       InstanceMethod("attachments", &Datapath::Attachments),
                                       InstanceMethod("setConfig", &Datapath::SetConfig),
                                       InstanceMethod("getConfig", &Datapath::GetConfig),
                                       InstanceMethod("poll", &Datapath::Poll),
                                       InstanceMethod("readFlows", &Datapath::ReadFlows),
                                       InstanceMethod("deleteFlows", &Datapath::DeleteFlows),
                                       InstanceMethod("stats", &Datapath::Stats),
                                       InstanceMethod("mapInfo", &Datapath::MapInfo),
                                       InstanceMethod("testRun", &Datapath::TestRun),
                                       InstanceMethod("close", &Datapath::Close),
                                   });
  exports.Set("Datapath", cls);
  Napi::Object sizes = Napi::Object::New(env);
  sizes.Set("key4", (uint32_t)sizeof(struct wgf_key4));
  sizes.Set("key6", (uint32_t)sizeof(struct wgf_key6));
  sizes.Set("flow", (uint32_t)sizeof(struct wgf_flow));
  sizes.Set("record", (uint32_t)sizeof(struct wgf_record));
  sizes.Set("stats", (uint32_t)sizeof(struct wgf_stats));
  exports.Set("sizes", sizes);

  // offsetof() and sizeof() of every struct user space decodes: test/datapath/layout.test.ts
  // compares them with src/datapath/records.ts's LAYOUT, so the header stays the one definition.
  Napi::Object layout = Napi::Object::New(env);
#define WGF_STRUCT(s) Napi::Object s##_o = Napi::Object::New(env); s##_o.Set("size", (uint32_t)sizeof(struct s)); layout.Set(#s, s##_o)
#define WGF_FIELD(s, f) s##_o.Set(#f, (uint32_t)offsetof(struct s, f))
  WGF_STRUCT(wgf_key4);
  WGF_FIELD(wgf_key4, addr_a); WGF_FIELD(wgf_key4, addr_b); WGF_FIELD(wgf_key4, port_a); WGF_FIELD(wgf_key4, port_b);
  WGF_FIELD(wgf_key4, proto); WGF_FIELD(wgf_key4, kind); WGF_FIELD(wgf_key4, ifindex);
  WGF_STRUCT(wgf_key6);
  WGF_FIELD(wgf_key6, addr_a); WGF_FIELD(wgf_key6, addr_b); WGF_FIELD(wgf_key6, port_a); WGF_FIELD(wgf_key6, port_b);
  WGF_FIELD(wgf_key6, proto); WGF_FIELD(wgf_key6, kind); WGF_FIELD(wgf_key6, ifindex);
  WGF_STRUCT(wgf_flow);
  WGF_FIELD(wgf_flow, first_ns); WGF_FIELD(wgf_flow, bytes); WGF_FIELD(wgf_flow, packets); WGF_FIELD(wgf_flow, last_seen); WGF_FIELD(wgf_flow, flags);
  WGF_STRUCT(wgf_record);
  WGF_FIELD(wgf_record, type); WGF_FIELD(wgf_record, family); WGF_FIELD(wgf_record, dir); WGF_FIELD(wgf_record, tcp_flags);
  WGF_FIELD(wgf_record, flags); WGF_FIELD(wgf_record, ts_ns); WGF_FIELD(wgf_record, k4); WGF_FIELD(wgf_record, k6);
  WGF_STRUCT(wgf_stats);
  WGF_FIELD(wgf_stats, flows_created); WGF_FIELD(wgf_stats, map_full); WGF_FIELD(wgf_stats, map_full_bytes); WGF_FIELD(wgf_stats, ringbuf_full);
  WGF_FIELD(wgf_stats, non_ip); WGF_FIELD(wgf_stats, malformed); WGF_FIELD(wgf_stats, malformed_bytes); WGF_FIELD(wgf_stats, fragments);
#undef WGF_FIELD
#undef WGF_STRUCT
  exports.Set("layout", layout);
  exports.Set("errnoName", Napi::Function::New(env, [](const Napi::CallbackInfo &info) -> Napi::Value {
    return Napi::String::New(info.Env(), ErrnoName(info[0].As<Napi::Number>().Int32Value()));
  }));
  // Hands memory the allocator keeps after a burst (freed, but in its arenas) back to the
  // kernel: glibc returns only the top of its heap by itself. Returns whether any was released.
  exports.Set("trimMemory", Napi::Function::New(env, [](const Napi::CallbackInfo &info) -> Napi::Value {
    return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
  }));
  // Allocations of at least this many bytes get their own mapping, returned to the kernel when
  // freed. glibc raises the threshold itself (up to 32 MiB) after freeing a large block, so that
  // the output buffers of a burst (MBs each) then land in the main heap and stay resident.
  exports.Set("setMmapThreshold", Napi::Function::New(env, [](const Napi::CallbackInfo &info) -> Napi::Value {
    int bytes = info[0].As<Napi::Number>().Int32Value();
    return Napi::Boolean::New(info.Env(), mallopt(M_MMAP_THRESHOLD, bytes) == 1);
  }));
  return exports;
}

// Any other BPF object (benchmark baselines): load it and test-run its programs.
class ProgramSet : public Napi::ObjectWrap<ProgramSet> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    exports.Set("ProgramSet", DefineClass(env, "ProgramSet",
                                          {InstanceMethod("testRun", &ProgramSet::TestRun),
                                           InstanceMethod("close", &ProgramSet::Close)}));
  }
  explicit ProgramSet(const Napi::CallbackInfo &info) : Napi::ObjectWrap<ProgramSet>(info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>();
    libbpf_set_print(CaptureLibbpfLog);
    obj_ = bpf_object__open_file(path.c_str(), nullptr);
    if (!obj_) throw ErrnoError(env, errno, "cannot open BPF object " + path);
    int err = bpf_object__load(obj_);
    if (err) {
      bpf_object__close(obj_);
      obj_ = nullptr;
      throw ErrnoError(env, err, "loading " + path + " failed" + PrivilegeHint(err) + "\n" + TakeLog());
    }
  }
  ~ProgramSet() override {
    if (obj_) bpf_object__close(obj_);
  }

 private:
  Napi::Value TestRun(const Napi::CallbackInfo &info) {
    if (!obj_) throw Napi::Error::New(info.Env(), "the program set is closed");
    return RunTest(info, obj_);
  }
  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (obj_) bpf_object__close(obj_);
    obj_ = nullptr;
    return info.Env().Undefined();
  }
  struct bpf_object *obj_ = nullptr;
};

}  // namespace

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  register_flow_event_json(env, exports);
  register_wg_netlink(env, exports);
  ProgramSet::Init(env, exports);
  Datapath::Init(env, exports);
  register_drops(env, exports);  // adds its structs to Datapath's layout
  return exports;
}

NODE_API_MODULE(wgflow_native, InitAll)

// Netlink reads for the WireGuard attribution source (src/attribution/sources/wireguard.ts): a
// kernel WireGuard device's peers (generic netlink family "wireguard", WG_CMD_GET_DEVICE) and an
// interface's addresses (rtnetlink RTM_GETADDR). Raw AF_NETLINK sockets, no libmnl or libnl.
//
// Synchronous on purpose: a netlink socket belongs to the network namespace of the thread that
// creates it, and a libuv pool thread need not be in the caller's namespace; a dump of thousands
// of peers takes milliseconds. Every message and attribute length is checked before a byte of it
// is read, and every read copies (memcpy) instead of casting into the receive buffer.

#include "wg_netlink.h"

#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/time_types.h>
#include <linux/wireguard.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace {

// Dump messages are at most 32 KiB (the kernel's cap); a larger one would be cut (MSG_TRUNC).
constexpr size_t kRecvBytes = 65536;
// A kernel that does not answer within this is broken; the event loop must not hang on it.
constexpr time_t kTimeoutS = 5;
// A dump the kernel marks inconsistent (NLM_F_DUMP_INTR: the device changed meanwhile) is redone.
constexpr int kDumpTries = 3;

struct Attr {
  uint16_t type;
  const uint8_t *data;
  size_t len;
};

// Calls fn(attr) for every attribute in [p, p + len): 0, -EBADMSG on a malformed attribute, or
// fn's first nonzero result.
template <typename Fn>
int ForEachAttr(const uint8_t *p, size_t len, Fn fn) {
  while (len > 0) {
    struct nlattr nla;
    if (len < NLA_HDRLEN) return -EBADMSG;
    memcpy(&nla, p, sizeof(nla));
    if (nla.nla_len < NLA_HDRLEN || nla.nla_len > len) return -EBADMSG;
    Attr a{static_cast<uint16_t>(nla.nla_type & NLA_TYPE_MASK), p + NLA_HDRLEN, static_cast<size_t>(nla.nla_len) - NLA_HDRLEN};
    int err = fn(a);
    if (err) return err;
    size_t step = NLA_ALIGN(nla.nla_len);
    if (step >= len) break;
    p += step;
    len -= step;
  }
  return 0;
}

// A fixed-size attribute value; false (nothing read) when the length is not exactly sizeof(T).
template <typename T>
bool Get(const Attr &a, T *out) {
  if (a.len != sizeof(T)) return false;
  memcpy(out, a.data, sizeof(T));
  return true;
}

// A request: header, a family header, attributes, each at NLMSG/NLA alignment.
class Request {
 public:
  Request(uint16_t type, uint16_t flags) : buf_(NLMSG_HDRLEN, 0) {
    struct nlmsghdr h = {};
    h.nlmsg_type = type;
    h.nlmsg_flags = flags;
    memcpy(buf_.data(), &h, sizeof(h));
  }
  template <typename T>
  void Put(const T &fixed) {
    Append(&fixed, sizeof(T), NLMSG_ALIGN(sizeof(T)));
  }
  void PutAttr(uint16_t type, const void *data, size_t len) {
    struct nlattr nla = {};
    nla.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    nla.nla_type = type;
    Append(&nla, sizeof(nla), NLA_HDRLEN);
    Append(data, len, NLA_ALIGN(len));
  }
  // The finished message with its length, sequence number and port id.
  std::vector<uint8_t> &Finish(uint32_t seq, uint32_t portid) {
    struct nlmsghdr h;
    memcpy(&h, buf_.data(), sizeof(h));
    h.nlmsg_len = static_cast<uint32_t>(buf_.size());
    h.nlmsg_seq = seq;
    h.nlmsg_pid = portid;
    memcpy(buf_.data(), &h, sizeof(h));
    return buf_;
  }

 private:
  void Append(const void *data, size_t len, size_t padded) {
    size_t at = buf_.size();
    buf_.resize(at + padded, 0);
    memcpy(buf_.data() + at, data, len);
  }
  std::vector<uint8_t> buf_;
};

// One message of a reply: its type, flags and payload (after the netlink header).
struct Msg {
  uint16_t type;
  uint16_t flags;
  const uint8_t *payload;
  size_t len;
};

class NlSocket {
 public:
  NlSocket() = default;
  NlSocket(const NlSocket &) = delete;
  NlSocket &operator=(const NlSocket &) = delete;
  ~NlSocket() {
    // The receive buffer may have held a private key (a WireGuard dump carries it): wipe it.
    if (!buf_.empty()) explicit_bzero(buf_.data(), buf_.size());
    if (fd_ >= 0) close(fd_);
  }

  int Open(int protocol) {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
    if (fd_ < 0) return -errno;
    struct timeval tv = {kTimeoutS, 0};
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) return -errno;
    struct sockaddr_nl sa = {};
    sa.nl_family = AF_NETLINK;
    if (bind(fd_, reinterpret_cast<struct sockaddr *>(&sa), sizeof(sa)) < 0) return -errno;
    socklen_t salen = sizeof(sa);
    if (getsockname(fd_, reinterpret_cast<struct sockaddr *>(&sa), &salen) < 0) return -errno;
    portid_ = sa.nl_pid;
    seq_ = static_cast<uint32_t>(time(nullptr));
    buf_.assign(kRecvBytes, 0);
    return 0;
  }

  // Sends req and calls fn for every reply message until the reply ends (an ack, NLMSG_DONE or
  // an error). Returns 0 or a negative errno (the kernel's own included). *interrupted is set
  // when the kernel marked a dump message inconsistent.
  int Exchange(Request &req, const std::function<int(const Msg &)> &fn, bool *interrupted) {
    uint32_t seq = ++seq_;
    std::vector<uint8_t> &out = req.Finish(seq, portid_);
    struct sockaddr_nl kernel = {};
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    do {
      sent = sendto(fd_, out.data(), out.size(), 0, reinterpret_cast<struct sockaddr *>(&kernel), sizeof(kernel));
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;
    if (static_cast<size_t>(sent) != out.size()) return -EMSGSIZE;
    for (;;) {
      struct sockaddr_nl from = {};
      struct iovec iov = {buf_.data(), buf_.size()};
      struct msghdr mh = {};
      mh.msg_name = &from;
      mh.msg_namelen = sizeof(from);
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      ssize_t n = recvmsg(fd_, &mh, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -ETIMEDOUT;
        return -errno;
      }
      if (mh.msg_flags & MSG_TRUNC) return -EMSGSIZE;
      if (from.nl_pid != 0) continue;  // only the kernel answers requests
      const uint8_t *p = buf_.data();
      size_t left = static_cast<size_t>(n);
      while (left > 0) {
        struct nlmsghdr h;
        if (left < sizeof(h)) return -EBADMSG;
        memcpy(&h, p, sizeof(h));
        if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > left) return -EBADMSG;
        if (h.nlmsg_seq == seq && h.nlmsg_pid == portid_) {
          if ((h.nlmsg_flags & NLM_F_DUMP_INTR) && interrupted) *interrupted = true;
          const uint8_t *payload = p + NLMSG_HDRLEN;
          size_t plen = h.nlmsg_len - NLMSG_HDRLEN;
          if (h.nlmsg_type == NLMSG_ERROR || h.nlmsg_type == NLMSG_DONE) {
            // Both carry an int: 0 (ack, end) or a negative errno. A bare NLMSG_DONE means 0.
            int code = 0;
            if (plen >= sizeof(code)) memcpy(&code, payload, sizeof(code));
            else if (h.nlmsg_type == NLMSG_ERROR) return -EBADMSG;
            return code > 0 ? -code : code;
          }
          if (h.nlmsg_type != NLMSG_NOOP) {
            int err = fn(Msg{h.nlmsg_type, h.nlmsg_flags, payload, plen});
            if (err) return err;
          }
        }
        size_t step = NLMSG_ALIGN(h.nlmsg_len);
        if (step >= left) break;
        p += step;
        left -= step;
      }
    }
  }

 private:
  int fd_ = -1;
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
  std::vector<uint8_t> buf_;
};

struct Prefix {
  uint8_t family;  // 4 or 6
  uint8_t addr[16];
  uint8_t cidr;
};

struct Endpoint {
  uint8_t family = 0;  // 0: none
  uint8_t addr[16] = {};
  uint16_t port = 0;
};

struct Peer {
  uint8_t key[WG_KEY_LEN] = {};
  Endpoint endpoint;
  int64_t handshake_s = 0;
  int64_t handshake_ns = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  uint16_t keepalive = 0;
  std::vector<Prefix> allowed;
};

struct Device {
  uint32_t ifindex = 0;
  uint16_t listen_port = 0;
  bool has_public_key = false;
  uint8_t public_key[WG_KEY_LEN] = {};
  std::vector<Peer> peers;
};

int ParseAllowedIp(const Attr &nest, Prefix *out) {
  uint16_t family = 0;
  Attr addr = {0, nullptr, 0};
  bool has_cidr = false;
  int err = ForEachAttr(nest.data, nest.len, [&](const Attr &a) {
    switch (a.type) {
      case WGALLOWEDIP_A_FAMILY:
        return Get(a, &family) ? 0 : -EBADMSG;
      case WGALLOWEDIP_A_IPADDR:
        addr = a;
        return 0;
      case WGALLOWEDIP_A_CIDR_MASK:
        has_cidr = true;
        return Get(a, &out->cidr) ? 0 : -EBADMSG;
      default:
        return 0;  // newer kernels add attributes (flags): not ours
    }
  });
  if (err) return err;
  size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
  if (want == 0 || addr.len != want || !has_cidr || out->cidr > want * 8) return -EBADMSG;
  out->family = family == AF_INET ? 4 : 6;
  memset(out->addr, 0, sizeof(out->addr));
  memcpy(out->addr, addr.data, want);
  return 0;
}

int ParseEndpoint(const Attr &a, Endpoint *out) {
  sa_family_t family;
  if (a.len < sizeof(family)) return -EBADMSG;
  memcpy(&family, a.data, sizeof(family));
  if (family == AF_INET) {
    struct sockaddr_in sin;
    if (a.len < sizeof(sin)) return -EBADMSG;
    memcpy(&sin, a.data, sizeof(sin));
    out->family = 4;
    memcpy(out->addr, &sin.sin_addr, 4);
    out->port = ntohs(sin.sin_port);
  } else if (family == AF_INET6) {
    struct sockaddr_in6 sin6;
    if (a.len < sizeof(sin6)) return -EBADMSG;
    memcpy(&sin6, a.data, sizeof(sin6));
    out->family = 6;
    memcpy(out->addr, &sin6.sin6_addr, 16);
    out->port = ntohs(sin6.sin6_port);
  }
  return 0;  // AF_UNSPEC: no endpoint yet
}

int ParsePeer(const Attr &nest, Peer *p) {
  bool has_key = false;
  int err = ForEachAttr(nest.data, nest.len, [&](const Attr &a) {
    switch (a.type) {
      case WGPEER_A_PUBLIC_KEY:
        if (a.len != WG_KEY_LEN) return -EBADMSG;
        memcpy(p->key, a.data, WG_KEY_LEN);
        has_key = true;
        return 0;
      case WGPEER_A_ENDPOINT:
        return ParseEndpoint(a, &p->endpoint);
      case WGPEER_A_LAST_HANDSHAKE_TIME: {
        struct __kernel_timespec ts;
        if (!Get(a, &ts)) return -EBADMSG;
        p->handshake_s = ts.tv_sec;
        p->handshake_ns = ts.tv_nsec;
        return 0;
      }
      case WGPEER_A_RX_BYTES:
        return Get(a, &p->rx_bytes) ? 0 : -EBADMSG;
      case WGPEER_A_TX_BYTES:
        return Get(a, &p->tx_bytes) ? 0 : -EBADMSG;
      case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
        return Get(a, &p->keepalive) ? 0 : -EBADMSG;
      case WGPEER_A_ALLOWEDIPS:
        return ForEachAttr(a.data, a.len, [&](const Attr &ip) {
          Prefix pfx;
          int e = ParseAllowedIp(ip, &pfx);
          if (e) return e;
          p->allowed.push_back(pfx);
          return 0;
        });
      default:
        return 0;  // the preshared key and anything newer: not needed
    }
  });
  if (err) return err;
  return has_key ? 0 : -EBADMSG;
}

// One message of a WG_CMD_GET_DEVICE dump into dev. A peer too large for one message continues
// in the next one with only its key and more allowed IPs: merged into the previous peer.
int ParseDeviceMsg(const Msg &m, Device *dev) {
  if (m.len < GENL_HDRLEN) return -EBADMSG;
  return ForEachAttr(m.payload + GENL_HDRLEN, m.len - GENL_HDRLEN, [&](const Attr &a) {
    switch (a.type) {
      case WGDEVICE_A_IFINDEX:
        return Get(a, &dev->ifindex) ? 0 : -EBADMSG;
      case WGDEVICE_A_LISTEN_PORT:
        return Get(a, &dev->listen_port) ? 0 : -EBADMSG;
      case WGDEVICE_A_PUBLIC_KEY:
        if (a.len != WG_KEY_LEN) return -EBADMSG;
        memcpy(dev->public_key, a.data, WG_KEY_LEN);
        dev->has_public_key = true;
        return 0;
      case WGDEVICE_A_PEERS:
        return ForEachAttr(a.data, a.len, [&](const Attr &nest) {
          Peer p;
          int e = ParsePeer(nest, &p);
          if (e) return e;
          if (!dev->peers.empty() && memcmp(dev->peers.back().key, p.key, WG_KEY_LEN) == 0) {
            std::vector<Prefix> &to = dev->peers.back().allowed;
            to.insert(to.end(), p.allowed.begin(), p.allowed.end());
          } else {
            dev->peers.push_back(std::move(p));
          }
          return 0;
        });
      default:
        return 0;  // the private key among others: never kept
    }
  });
}

// The id of the "wireguard" generic netlink family; -ENOENT when the kernel has none.
int WireGuardFamily(NlSocket &s, uint16_t *id) {
  Request r(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK);
  struct genlmsghdr g = {};
  g.cmd = CTRL_CMD_GETFAMILY;
  g.version = 1;
  r.Put(g);
  r.PutAttr(CTRL_ATTR_FAMILY_NAME, WG_GENL_NAME, sizeof(WG_GENL_NAME));
  *id = 0;
  int err = s.Exchange(r, [&](const Msg &m) {
    if (m.len < GENL_HDRLEN) return -EBADMSG;
    return ForEachAttr(m.payload + GENL_HDRLEN, m.len - GENL_HDRLEN, [&](const Attr &a) {
      if (a.type == CTRL_ATTR_FAMILY_ID && !Get(a, id)) return -EBADMSG;
      return 0;
    });
  }, nullptr);
  if (err) return err;
  return *id ? 0 : -EBADMSG;
}

// What failed, for the error message (the errno says why).
struct Failure {
  int err;
  std::string what;
};

Failure GetDevice(const std::string &ifname, Device *dev) {
  // A missing interface is ENODEV even on a kernel without WireGuard (where the family lookup
  // below would fail first).
  if (if_nametoindex(ifname.c_str()) == 0) {
    int err = errno == ENXIO || errno == 0 ? ENODEV : errno;
    return {-err, err == ENODEV ? "no such interface in this network namespace" : "cannot look the interface up"};
  }
  NlSocket s;
  int err = s.Open(NETLINK_GENERIC);
  if (err) return {err, "cannot open a generic netlink socket"};
  uint16_t family;
  err = WireGuardFamily(s, &family);
  if (err == -ENOENT) return {-EOPNOTSUPP, "not a WireGuard interface: the kernel has no \"wireguard\" generic netlink family (no WireGuard module)"};
  if (err) return {err, "resolving the \"wireguard\" generic netlink family failed"};
  for (int attempt = 0; attempt < kDumpTries; attempt++) {
    Request r(family, NLM_F_REQUEST | NLM_F_DUMP);
    struct genlmsghdr g = {};
    g.cmd = WG_CMD_GET_DEVICE;
    g.version = WG_GENL_VERSION;
    r.Put(g);
    r.PutAttr(WGDEVICE_A_IFNAME, ifname.c_str(), ifname.size() + 1);
    *dev = Device();
    bool interrupted = false;
    err = s.Exchange(r, [&](const Msg &m) { return ParseDeviceMsg(m, dev); }, &interrupted);
    if (err == -ENODEV) return {err, "no such interface in this network namespace"};
    if (err == -EOPNOTSUPP) return {err, "not a WireGuard interface"};
    if (err == -EPERM) return {err, "reading a WireGuard device needs CAP_NET_ADMIN"};
    if (err == -EBADMSG) return {err, "the kernel's WireGuard reply is malformed"};
    if (err) return {err, "WG_CMD_GET_DEVICE failed"};
    if (!interrupted) return {0, ""};
  }
  return {-EAGAIN, "the device changed during every read (NLM_F_DUMP_INTR)"};
}

struct IfAddr {
  uint8_t family;  // 4 or 6
  uint8_t prefix_len;
  uint8_t scope;
  uint32_t flags;
  bool has_local = false;
  bool has_address = false;
  uint8_t local[16] = {};
  uint8_t address[16] = {};
};

Failure GetAddresses(unsigned ifindex, std::vector<IfAddr> *out) {
  NlSocket s;
  int err = s.Open(NETLINK_ROUTE);
  if (err) return {err, "cannot open a rtnetlink socket"};
  Request r(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
  struct ifaddrmsg req = {};
  req.ifa_family = AF_UNSPEC;
  req.ifa_index = ifindex;
  r.Put(req);
  out->clear();
  err = s.Exchange(r, [&](const Msg &m) {
    if (m.type != RTM_NEWADDR) return 0;
    struct ifaddrmsg ifa;
    if (m.len < sizeof(ifa)) return -EBADMSG;
    memcpy(&ifa, m.payload, sizeof(ifa));
    // Without strict checking the kernel dumps every interface's addresses.
    if (ifa.ifa_index != ifindex) return 0;
    size_t alen = ifa.ifa_family == AF_INET ? 4 : ifa.ifa_family == AF_INET6 ? 16 : 0;
    if (alen == 0) return 0;
    if (ifa.ifa_prefixlen > alen * 8) return -EBADMSG;
    IfAddr x;
    x.family = alen == 4 ? 4 : 6;
    x.prefix_len = ifa.ifa_prefixlen;
    x.scope = ifa.ifa_scope;
    x.flags = ifa.ifa_flags;
    size_t at = NLMSG_ALIGN(sizeof(ifa));
    if (at > m.len) return -EBADMSG;
    int e = ForEachAttr(m.payload + at, m.len - at, [&](const Attr &a) {
      switch (a.type) {
        case IFA_ADDRESS:
          if (a.len != alen) return -EBADMSG;
          memcpy(x.address, a.data, alen);
          x.has_address = true;
          return 0;
        case IFA_LOCAL:
          if (a.len != alen) return -EBADMSG;
          memcpy(x.local, a.data, alen);
          x.has_local = true;
          return 0;
        case IFA_FLAGS:
          return Get(a, &x.flags) ? 0 : -EBADMSG;
        default:
          return 0;
      }
    });
    if (e) return e;
    if (x.has_address || x.has_local) out->push_back(x);
    return 0;
  }, nullptr);
  if (err == -EBADMSG) return {err, "the kernel's RTM_GETADDR reply is malformed"};
  if (err) return {err, "RTM_GETADDR failed"};
  return {0, ""};
}

Napi::Error FailureError(Napi::Env env, const std::string &ifname, const Failure &f) {
  int err = f.err < 0 ? -f.err : f.err;
  const char *name = strerrorname_np(err);
  std::string code = name ? name : "EUNKNOWN";
  Napi::Error e = Napi::Error::New(env, ifname + ": " + f.what + " (" + code + ": " + strerror(err) + ")");
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// The interface name argument: 1 to IFNAMSIZ - 1 bytes, no NUL inside.
std::string IfnameArg(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "an interface name (string) is expected");
  std::string name = info[0].As<Napi::String>();
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) {
    throw FailureError(info.Env(), name, {-EINVAL, "not a valid interface name"});
  }
  return name;
}

Napi::Buffer<uint8_t> Bytes(Napi::Env env, const uint8_t *p, size_t n) {
  return Napi::Buffer<uint8_t>::Copy(env, p, n);
}

Napi::Value WgGetDevice(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameArg(info);
  Device dev;
  Failure f = GetDevice(ifname, &dev);
  if (f.err) throw FailureError(env, ifname, f);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ifindex", Napi::Number::New(env, dev.ifindex));
  o.Set("listenPort", Napi::Number::New(env, dev.listen_port));
  o.Set("publicKey", dev.has_public_key ? Napi::Value(Bytes(env, dev.public_key, WG_KEY_LEN)) : env.Null());
  Napi::Array peers = Napi::Array::New(env, dev.peers.size());
  for (size_t i = 0; i < dev.peers.size(); i++) {
    const Peer &p = dev.peers[i];
    Napi::Object po = Napi::Object::New(env);
    po.Set("publicKey", Bytes(env, p.key, WG_KEY_LEN));
    if (p.endpoint.family) {
      Napi::Object ep = Napi::Object::New(env);
      ep.Set("family", Napi::Number::New(env, p.endpoint.family));
      ep.Set("addr", Bytes(env, p.endpoint.addr, p.endpoint.family == 4 ? 4 : 16));
      ep.Set("port", Napi::Number::New(env, p.endpoint.port));
      po.Set("endpoint", ep);
    } else {
      po.Set("endpoint", env.Null());
    }
    po.Set("lastHandshakeSec", Napi::Number::New(env, static_cast<double>(p.handshake_s)));
    po.Set("lastHandshakeNsec", Napi::Number::New(env, static_cast<double>(p.handshake_ns)));
    po.Set("rxBytes", Napi::Number::New(env, static_cast<double>(p.rx_bytes)));
    po.Set("txBytes", Napi::Number::New(env, static_cast<double>(p.tx_bytes)));
    po.Set("persistentKeepalive", Napi::Number::New(env, p.keepalive));
    Napi::Array ips = Napi::Array::New(env, p.allowed.size());
    for (size_t j = 0; j < p.allowed.size(); j++) {
      const Prefix &x = p.allowed[j];
      Napi::Object xo = Napi::Object::New(env);
      xo.Set("family", Napi::Number::New(env, x.family));
      xo.Set("addr", Bytes(env, x.addr, x.family == 4 ? 4 : 16));
      xo.Set("cidr", Napi::Number::New(env, x.cidr));
      ips.Set(static_cast<uint32_t>(j), xo);
    }
    po.Set("allowedIps", ips);
    peers.Set(static_cast<uint32_t>(i), po);
  }
  o.Set("peers", peers);
  return o;
}

Napi::Value NetlinkAddresses(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameArg(info);
  unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) {
    int err = errno == ENXIO || errno == 0 ? ENODEV : errno;
    throw FailureError(env, ifname, {-err, err == ENODEV ? "no such interface in this network namespace" : "cannot look the interface up"});
  }
  std::vector<IfAddr> addrs;
  Failure f = GetAddresses(ifindex, &addrs);
  if (f.err) throw FailureError(env, ifname, f);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ifindex", Napi::Number::New(env, ifindex));
  Napi::Array arr = Napi::Array::New(env, addrs.size());
  for (size_t i = 0; i < addrs.size(); i++) {
    const IfAddr &a = addrs[i];
    size_t alen = a.family == 4 ? 4 : 16;
    Napi::Object ao = Napi::Object::New(env);
    ao.Set("family", Napi::Number::New(env, a.family));
    // IFA_LOCAL is this end's address; IFA_ADDRESS the prefix's (the peer's on a point-to-point
    // link with a peer address). Each defaults to the other when only one is given.
    ao.Set("local", Bytes(env, a.has_local ? a.local : a.address, alen));
    ao.Set("address", Bytes(env, a.has_address ? a.address : a.local, alen));
    ao.Set("prefixLen", Napi::Number::New(env, a.prefix_len));
    ao.Set("scope", Napi::Number::New(env, a.scope));
    ao.Set("flags", Napi::Number::New(env, a.flags));
    arr.Set(static_cast<uint32_t>(i), ao);
  }
  o.Set("addresses", arr);
  return o;
}

}  // namespace

void register_wg_netlink(Napi::Env env, Napi::Object exports) {
  exports.Set("wgGetDevice", Napi::Function::New(env, WgGetDevice));
  exports.Set("netlinkAddresses", Napi::Function::New(env, NetlinkAddresses));
}

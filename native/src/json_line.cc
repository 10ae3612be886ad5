// The collector's hot path in C++: one flow.FlowEvent message to its JSON line, bytes to bytes.
//
// It does what src/export/wire-reader.ts (scanFlowEvent + checkScanned) and
// src/collector/event-json.ts (writeJsonLine) do together, for the common case only: a valid
// event whose numbers JavaScript holds exactly, whose text is valid UTF-8 and whose times have
// four-digit years. Anything else returns -1 and the collector takes the JavaScript route, which
// is the reference (it words the refusals). test/collector/event-json.test.ts checks that both
// routes write the same bytes, on every event shape and on thousands of damaged messages.
//
// JS: flowEventJson(src, start, end, out, at, receiveMs, meta) -> bytes written at out[at..], or -1.
// meta[0] receives the offset of the 16-byte event id in src.

#include "json_line.h"

#include <node_api.h>

#include <cstdint>
#include <cstring>

namespace {

// Numbers at or past 2^53 lose precision in JavaScript: such messages take the JS route.
constexpr uint64_t kMaxExact = 1ull << 53;
// Date's range in ms (a later time has no RFC 3339 form: JS refuses the event).
constexpr uint64_t kMaxTimeMs = 8640000000000000ull;
// First second of the year 10000: rfc3339 takes Date's six-digit form from there on.
constexpr uint64_t kYear10000 = 253402300800ull;

// ASCII bytes JSON text takes as they are (not a control character, quote or backslash).
struct PlainTable {
  bool v[256] = {};
  constexpr PlainTable() {
    for (int c = 0x20; c < 0x80; c++) v[c] = c != '"' && c != '\\';
  }
  constexpr bool operator[](uint8_t c) const { return v[c]; }
};
constexpr PlainTable kPlain;

struct Span {
  uint32_t s = 0, e = 0;
  uint32_t len() const { return e - s; }
};

struct Endpoint {
  bool present = false;
  uint64_t type = 0;
  Span id, name, dns, os, key;
};

struct Window {
  int64_t s = -1, e = -1;
};

struct Event {
  bool initiator = false, has_flow_fields = false, counters_enabled = false;
  Span event_id, public_key, reporter_id, iface, flow_id, rule_id, src_ip, dst_ip, src_res,
      dst_res, policy_name, user_id, user_name, user_email, drop_reason;
  Endpoint src, dst;
  Window ts, ws, we;
  uint64_t type = 0, direction = 0, protocol = 0, rx_packets = 0, tx_packets = 0, rx_bytes = 0,
           tx_bytes = 0, end_reason = 0, flags_i = 0, flags_r = 0, sport = 0, dport = 0,
           icmp_type = 0, icmp_code = 0;
};

// A protobuf reader over [pos, end). Every method returns false where the JS reader throws, or
// where a value would not be exact in JS: the caller then gives up on the fast route.
struct Reader {
  const uint8_t *b;
  uint32_t pos, end;

  bool varint(uint64_t &v) {
    uint64_t r = 0;
    for (int i = 0; i < 10; i++) {
      if (pos >= end) return false;
      const uint8_t c = b[pos++];
      if (i >= 8 && (c & 0x7f)) return false;  // >= 2^56 (and no bits shifted out)
      r |= uint64_t(c & 0x7f) << (7 * i);
      if (c < 0x80) {
        if (r >= kMaxExact) return false;
        v = r;
        return true;
      }
    }
    return false;
  }

  // Content span of a length-delimited field.
  bool len(Span &sp) {
    uint64_t n;
    if (!varint(n) || n > end - pos) return false;
    sp.s = pos;
    sp.e = pos + uint32_t(n);
    pos = sp.e;
    return true;
  }

  bool skip(uint64_t wt) {
    uint64_t v;
    Span sp;
    switch (wt) {
      case 0: return varint(v);
      case 2: return len(sp);
      case 1: pos += 8; break;
      case 5: pos += 4; break;
      default: return false;
    }
    return pos <= end;
  }

  bool tag(uint64_t &field, uint64_t &wt) {
    uint64_t t;
    if (!varint(t)) return false;
    field = t >> 3;
    wt = t & 7;
    return true;
  }
};

bool scan_endpoint(const uint8_t *b, Span sp, Endpoint &e) {
  e = Endpoint();  // a later occurrence replaces an earlier one whole
  e.present = true;
  Reader m{b, sp.s, sp.e};
  while (m.pos < m.end) {
    uint64_t f, wt;
    if (!m.tag(f, wt)) return false;
    if (wt == 2 && f >= 1 && f <= 6 && f != 3) {
      Span *dst = f == 1 ? &e.id : f == 2 ? &e.name : f == 4 ? &e.dns : f == 5 ? &e.os : &e.key;
      if (!m.len(*dst)) return false;
    } else if (wt == 0 && f == 3) {
      if (!m.varint(e.type)) return false;
    } else if (!m.skip(wt)) {
      return false;
    }
  }
  return true;
}

// Varint fields 1 and 2 of a small message (port_info, icmp_info, Timestamp).
bool scan_pair(const uint8_t *b, Span sp, uint64_t &a, uint64_t &c) {
  a = c = 0;
  Reader m{b, sp.s, sp.e};
  while (m.pos < m.end) {
    uint64_t f, wt;
    if (!m.tag(f, wt)) return false;
    if (wt == 0 && f == 1) {
      if (!m.varint(a)) return false;
    } else if (wt == 0 && f == 2) {
      if (!m.varint(c)) return false;
    } else if (!m.skip(wt)) {
      return false;
    }
  }
  return true;
}

bool scan_flow_fields(const uint8_t *b, Span sp, Event &ev) {
  Reader m{b, sp.s, sp.e};
  while (m.pos < m.end) {
    uint64_t f, wt;
    if (!m.tag(f, wt)) return false;
    if (wt == 0) {
      uint64_t v;
      if (!m.varint(v)) return false;
      switch (f) {
        case 2: ev.type = v; break;
        case 4: ev.direction = v; break;
        case 5: ev.protocol = v; break;
        case 10: ev.rx_packets = v; break;
        case 11: ev.tx_packets = v; break;
        case 12: ev.rx_bytes = v; break;
        case 13: ev.tx_bytes = v; break;
        case 104: ev.end_reason = v; break;
        case 105: ev.counters_enabled = v != 0; break;
        case 106: ev.flags_i = v; break;
        case 107: ev.flags_r = v; break;
        default: break;
      }
    } else if (wt == 2) {
      Span s;
      if (!m.len(s)) return false;
      switch (f) {
        case 1: ev.flow_id = s; break;
        case 3: ev.rule_id = s; break;
        case 6: ev.src_ip = s; break;
        case 7: ev.dst_ip = s; break;
        case 8:  // oneof connection_info: the last member seen wins
          if (!scan_pair(b, s, ev.sport, ev.dport)) return false;
          ev.icmp_type = ev.icmp_code = 0;
          break;
        case 9:
          if (!scan_pair(b, s, ev.icmp_type, ev.icmp_code)) return false;
          ev.sport = ev.dport = 0;
          break;
        case 14: ev.src_res = s; break;
        case 15: ev.dst_res = s; break;
        case 100: if (!scan_endpoint(b, s, ev.src)) return false; break;
        case 101: if (!scan_endpoint(b, s, ev.dst)) return false; break;
        case 102: ev.policy_name = s; break;
        case 108: ev.drop_reason = s; break;
        case 103: {  // user: repeated occurrences merge field by field
          Reader u{b, s.s, s.e};
          while (u.pos < u.end) {
            uint64_t uf, uwt;
            if (!u.tag(uf, uwt)) return false;
            if (uwt == 2 && uf >= 1 && uf <= 3) {
              if (!u.len(uf == 1 ? ev.user_id : uf == 2 ? ev.user_name : ev.user_email)) return false;
            } else if (!u.skip(uwt)) {
              return false;
            }
          }
          break;
        }
        default: break;
      }
    } else if (!m.skip(wt)) {
      return false;
    }
  }
  return true;
}

bool scan_event(const uint8_t *b, uint32_t n, Event &ev) {
  Reader r{b, 0, n};
  Span ff;
  bool has_ff = false;
  while (r.pos < r.end) {
    uint64_t f, wt;
    if (!r.tag(f, wt)) return false;
    if (wt == 2) {
      Span s;
      if (!r.len(s)) return false;
      switch (f) {
        case 1: ev.event_id = s; break;
        case 2: ev.ts = {int64_t(s.s), int64_t(s.e)}; break;
        case 3: ev.public_key = s; break;
        case 4: ff = s; has_ff = true; break;
        case 6: ev.ws = {int64_t(s.s), int64_t(s.e)}; break;
        case 7: ev.we = {int64_t(s.s), int64_t(s.e)}; break;
        case 100: ev.reporter_id = s; break;
        case 101: ev.iface = s; break;
        default: break;
      }
    } else if (wt == 0 && f == 5) {
      uint64_t v;
      if (!r.varint(v)) return false;
      ev.initiator = v != 0;
    } else if (!r.skip(wt)) {
      return false;
    }
  }
  if (ev.initiator) return false;  // the handshake: the JS route answers it
  if (!has_ff) return false;
  ev.has_flow_fields = true;
  return scan_flow_fields(b, ff, ev);
}

// A Timestamp message to epoch ms, as checkScanned reads it.
bool read_time(const uint8_t *b, Window w, uint64_t &ms) {
  uint64_t sec, nanos;
  if (!scan_pair(b, Span{uint32_t(w.s), uint32_t(w.e)}, sec, nanos)) return false;
  if (nanos > 999999999) return false;
  ms = sec * 1000 + nanos / 1000000;  // sec < 2^53: no overflow
  return ms <= kMaxTimeMs;
}

bool check_ip(Span s) { return s.len() == 0 || s.len() == 4 || s.len() == 16; }
bool check_key(Span s) { return s.len() == 0 || s.len() == 32; }

// The JSON line. Every write checks room first: out of room is a -1 like any other surprise.
class Out {
 public:
  Out(uint8_t *p, uint8_t *lim) : p_(p), lim_(lim) {}
  bool ok() const { return ok_; }
  uint8_t *pos() const { return p_; }

  bool room(size_t n) {
    if (size_t(lim_ - p_) < n) ok_ = false;
    return ok_;
  }

  template <size_t N>
  void lit(const char (&s)[N]) {
    if (!room(N - 1)) return;
    memcpy(p_, s, N - 1);
    p_ += N - 1;
  }

  void byte(uint8_t c) {
    if (room(1)) *p_++ = c;
  }

  // A non-negative integer below 2^53, in decimal (String(n) in JS).
  void uint(uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
      tmp[n++] = char('0' + v % 10);
      v /= 10;
    } while (v > 0);
    if (!room(n)) return;
    uint8_t *p = p_;
    while (n > 0) *p++ = uint8_t(tmp[--n]);
    p_ = p;
  }

  // Lowercase hex, dashes before bytes 4, 6, 8 and 10 (a UUID).
  void uuid(const uint8_t *b) {
    static const char kHex[] = "0123456789abcdef";
    if (!room(36)) return;
    uint8_t *p = p_;
    for (int i = 0; i < 16; i++) {
      if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
      *p++ = uint8_t(kHex[b[i] >> 4]);
      *p++ = uint8_t(kHex[b[i] & 15]);
    }
    p_ = p;
  }

  void base64(const uint8_t *b, uint32_t n) {
    static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!room((n + 2) / 3 * 4)) return;
    uint8_t *p = p_;
    uint32_t i = 0;
    for (; i + 3 <= n; i += 3) {
      const uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8) | b[i + 2];
      *p++ = uint8_t(kB64[v >> 18]);
      *p++ = uint8_t(kB64[(v >> 12) & 63]);
      *p++ = uint8_t(kB64[(v >> 6) & 63]);
      *p++ = uint8_t(kB64[v & 63]);
    }
    if (n - i == 1) {
      const uint32_t v = uint32_t(b[i]) << 16;
      *p++ = uint8_t(kB64[v >> 18]);
      *p++ = uint8_t(kB64[(v >> 12) & 63]);
      *p++ = '=';
      *p++ = '=';
    } else if (n - i == 2) {
      const uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8);
      *p++ = uint8_t(kB64[v >> 18]);
      *p++ = uint8_t(kB64[(v >> 12) & 63]);
      *p++ = uint8_t(kB64[(v >> 6) & 63]);
      *p++ = '=';
    }
    p_ = p;
  }

  // JSON.stringify of valid UTF-8 text; invalid UTF-8 fails (the JS route decodes it with U+FFFD).
  void str(const uint8_t *b, Span s) {
    if (!room(size_t(s.len()) * 6 + 2)) return;
    // A local cursor: stores through a byte pointer may alias p_, so the compiler would reload
    // and store p_ for every byte.
    uint8_t *p = p_;
    *p++ = '"';
    for (uint32_t i = s.s; i < s.e;) {
      const uint8_t c = b[i];
      if (kPlain[c]) {
        *p++ = c;
        i++;
      } else if (c < 0x80) {
        *p++ = '\\';
        switch (c) {
          case 0x08: *p++ = 'b'; break;
          case 0x09: *p++ = 't'; break;
          case 0x0a: *p++ = 'n'; break;
          case 0x0c: *p++ = 'f'; break;
          case 0x0d: *p++ = 'r'; break;
          case '"': *p++ = '"'; break;
          case '\\': *p++ = '\\'; break;
          default:
            static const char kHex[] = "0123456789abcdef";
            memcpy(p, "u00", 3);
            p += 3;
            *p++ = uint8_t(kHex[c >> 4]);
            *p++ = uint8_t(kHex[c & 15]);
        }
        i++;
      } else {
        const uint32_t n = utf8_len(b, i, s.e);
        if (n == 0) {
          ok_ = false;
          return;
        }
        memcpy(p, b + i, n);
        p += n;
        i += n;
      }
    }
    *p++ = '"';
    p_ = p;
  }

  // "YYYY-MM-DDTHH:MM:SS.mmmZ" (Date#toISOString) for times before the year 10000.
  void time(uint64_t ms) {
    const uint64_t sec = ms / 1000;
    if (sec >= kYear10000) {
      ok_ = false;
      return;
    }
    if (!room(24)) return;
    const uint64_t days = sec / 86400, rem = sec % 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(int64_t(days), y, m, d);
    digits(uint64_t(y), 4);
    *p_++ = '-';
    digits(m, 2);
    *p_++ = '-';
    digits(d, 2);
    *p_++ = 'T';
    digits(rem / 3600, 2);
    *p_++ = ':';
    digits(rem / 60 % 60, 2);
    *p_++ = ':';
    digits(rem % 60, 2);
    *p_++ = '.';
    digits(ms % 1000, 3);
    *p_++ = 'Z';
  }

  // RFC 5952 text, as src/ip-text.ts writes it (IPv4-mapped as ::ffff:a.b.c.d).
  void ipv6(const uint8_t *b) {
    if (!room(48)) return;
    unsigned g[8];
    for (int i = 0; i < 8; i++) g[i] = (unsigned(b[2 * i]) << 8) | b[2 * i + 1];
    if (!g[0] && !g[1] && !g[2] && !g[3] && !g[4] && g[5] == 0xffff) {
      lit("::ffff:");
      ipv4(b + 12);
      return;
    }
    int best_at = -1, best_len = 0;
    for (int i = 0; i < 8;) {
      if (g[i]) {
        i++;
        continue;
      }
      int j = i;
      while (j < 8 && !g[j]) j++;
      if (j - i > best_len && j - i >= 2) {
        best_at = i;
        best_len = j - i;
      }
      i = j;
    }
    static const char kHex[] = "0123456789abcdef";
    uint8_t *p = p_;
    bool first = true;
    for (int i = 0; i < 8; i++) {
      if (i == best_at) {
        *p++ = ':';
        *p++ = ':';
        i += best_len - 1;
        first = true;
        continue;
      }
      if (!first) *p++ = ':';
      first = false;
      const unsigned v = g[i];
      if (v >= 0x1000) *p++ = uint8_t(kHex[v >> 12]);
      if (v >= 0x100) *p++ = uint8_t(kHex[(v >> 8) & 15]);
      if (v >= 0x10) *p++ = uint8_t(kHex[(v >> 4) & 15]);
      *p++ = uint8_t(kHex[v & 15]);
    }
    p_ = p;
  }

  void ipv4(const uint8_t *b) {
    for (int k = 0; k < 4; k++) {
      if (k > 0) byte('.');
      uint(b[k]);
    }
  }

 private:
  void digits(uint64_t v, int n) {
    for (int k = n - 1; k >= 0; k--) {
      p_[k] = uint8_t('0' + v % 10);
      v /= 10;
    }
    p_ += n;
  }

  // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
  static void civil_from_days(int64_t z, int64_t &y, unsigned &m, unsigned &d) {
    z += 719468;
    const int64_t era = z / 146097;
    const unsigned doe = unsigned(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = int64_t(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
  }

  // Length of the valid UTF-8 sequence at b[i] (lead byte >= 0x80), 0 if it is not one.
  static uint32_t utf8_len(const uint8_t *b, uint32_t i, uint32_t end) {
    const uint8_t c = b[i];
    uint32_t n;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0) lo = 0xa0;
      else if (c == 0xed) hi = 0x9f;  // no UTF-16 surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0) lo = 0x90;
      else if (c == 0xf4) hi = 0x8f;
    } else {
      return 0;
    }
    if (n > end - i) return 0;
    if (b[i + 1] < lo || b[i + 1] > hi) return 0;
    for (uint32_t k = 2; k < n; k++)
      if ((b[i + k] & 0xc0) != 0x80) return 0;
    return n;
  }

  uint8_t *p_;
  uint8_t *lim_;
  bool ok_ = true;
};

void write_endpoint(Out &o, const uint8_t *b, const Endpoint &e, Span ip, uint64_t port, Span resource_id) {
  if (ip.len() == 16) {
    o.lit("{\"address\":\"[");
    o.ipv6(b + ip.s);
    o.byte(']');
  } else {
    o.lit("{\"address\":\"");
    if (ip.len() == 4) o.ipv4(b + ip.s);
  }
  o.byte(':');
  o.uint(port);
  o.lit("\",\"id\":");
  // A NetBird sender has no endpoint extension: fall back to the contract's resource id.
  o.str(b, e.present && e.id.len() > 0 ? e.id : resource_id);
  if (!e.present) {
    o.lit(",\"name\":\"\",\"type\":\"UNKNOWN\",\"dns_label\":\"\",\"os\":\"\",\"geo_location\":{\"city_name\":\"\",\"country_code\":\"\"},\"public_key\":\"\"}");
    return;
  }
  o.lit(",\"name\":");
  o.str(b, e.name);
  switch (e.type) {
    case 1: o.lit(",\"type\":\"PEER\",\"dns_label\":"); break;
    case 2: o.lit(",\"type\":\"HOST_RESOURCE\",\"dns_label\":"); break;
    case 3: o.lit(",\"type\":\"SUBNET_RESOURCE\",\"dns_label\":"); break;
    case 4: o.lit(",\"type\":\"DOMAIN_RESOURCE\",\"dns_label\":"); break;
    default: o.lit(",\"type\":\"UNKNOWN\",\"dns_label\":"); break;
  }
  o.str(b, e.dns);
  o.lit(",\"os\":");
  o.str(b, e.os);
  o.lit(",\"geo_location\":{\"city_name\":\"\",\"country_code\":\"\"},\"public_key\":\"");
  o.base64(b + e.key.s, e.key.len());
  o.lit("\"}");
}

void write_line(Out &o, const uint8_t *b, const Event &ev, uint64_t ts, int64_t ws, int64_t we, uint64_t received) {
  o.lit("{\"id\":\"");
  o.uuid(b + ev.event_id.s);
  o.lit("\",\"flow_id\":\"");
  o.uuid(b + ev.flow_id.s);
  switch (ev.type) {
    case 1: o.lit("\",\"type\":\"TYPE_START\""); break;
    case 2: o.lit("\",\"type\":\"TYPE_END\""); break;
    case 3: o.lit("\",\"type\":\"TYPE_DROP\""); break;
    default: o.lit("\",\"type\":\"TYPE_UPDATE\""); break;  // 100: checked by the caller
  }
  if (ev.direction == 1) o.lit(",\"direction\":\"INGRESS\",\"protocol\":");
  else o.lit(",\"direction\":\"EGRESS\",\"protocol\":");
  o.uint(ev.protocol);
  o.lit(",\"icmp_type\":");
  o.uint(ev.icmp_type);
  o.lit(",\"icmp_code\":");
  o.uint(ev.icmp_code);
  o.lit(",\"policy_id\":");
  o.str(b, ev.rule_id);
  o.lit(",\"policy_name\":");
  o.str(b, ev.policy_name);
  o.lit(",\"reporter_id\":");
  o.str(b, ev.reporter_id);
  o.lit(",\"timestamp\":\"");
  o.time(ts);
  o.lit("\",\"receive_timestamp\":\"");
  o.time(received);
  o.lit("\",\"rx_bytes\":");
  o.uint(ev.rx_bytes);
  o.lit(",\"rx_packets\":");
  o.uint(ev.rx_packets);
  o.lit(",\"tx_bytes\":");
  o.uint(ev.tx_bytes);
  o.lit(",\"tx_packets\":");
  o.uint(ev.tx_packets);
  o.lit(",\"source\":");
  write_endpoint(o, b, ev.src, ev.src_ip, ev.sport, ev.src_res);
  o.lit(",\"destination\":");
  write_endpoint(o, b, ev.dst, ev.dst_ip, ev.dport, ev.dst_res);
  o.lit(",\"user_id\":");
  o.str(b, ev.user_id);
  o.lit(",\"user_email\":");
  o.str(b, ev.user_email);
  o.lit(",\"user_name\":");
  o.str(b, ev.user_name);
  o.lit(",\"wgflow_reporter_public_key\":\"");
  o.base64(b + ev.public_key.s, ev.public_key.len());
  o.lit("\",\"wgflow_interface\":");
  o.str(b, ev.iface);
  if (ev.counters_enabled) o.lit(",\"wgflow_counters_enabled\":true,\"wgflow_tcp_flags_initiator\":");
  else o.lit(",\"wgflow_counters_enabled\":false,\"wgflow_tcp_flags_initiator\":");
  o.uint(ev.flags_i);
  o.lit(",\"wgflow_tcp_flags_responder\":");
  o.uint(ev.flags_r);
  switch (ev.end_reason) {
    case 1: o.lit(",\"wgflow_end_reason\":\"idle\""); break;
    case 2: o.lit(",\"wgflow_end_reason\":\"tcp_fin\""); break;
    case 3: o.lit(",\"wgflow_end_reason\":\"tcp_rst\""); break;
    case 4: o.lit(",\"wgflow_end_reason\":\"forced\""); break;
    case 5: o.lit(",\"wgflow_end_reason\":\"lack_of_resources\""); break;
    default: break;
  }
  if (ev.drop_reason.len() > 0) {
    o.lit(",\"wgflow_drop_reason\":");
    o.str(b, ev.drop_reason);
  }
  if (ev.type == 3) {
    if (ev.rule_id.len() > 0)
      o.lit(",\"wgflow_drop_policy\":\"matched\"");
    else
      o.lit(",\"wgflow_drop_policy\":\"none\"");
  }
  if (ws >= 0) {
    o.lit(",\"wgflow_window_start\":\"");
    o.time(uint64_t(ws));
    o.byte('"');
  }
  if (we >= 0) {
    o.lit(",\"wgflow_window_end\":\"");
    o.time(uint64_t(we));
    o.byte('"');
  }
  o.byte('}');
}

}  // namespace

int64_t flow_event_json(const uint8_t *msg, uint32_t n, uint8_t *out, size_t room, uint64_t received_ms, uint32_t *event_id_at) {
  Event ev;
  if (!scan_event(msg, n, ev)) return -1;
  // checkScanned's conditions; its refusals are worded by the JS route.
  if (ev.type != 1 && ev.type != 2 && ev.type != 3 && ev.type != 100) return -1;
  if (ev.direction != 1 && ev.direction != 2) return -1;
  if (ev.ts.s < 0 || ev.event_id.len() != 16 || ev.flow_id.len() != 16) return -1;
  uint64_t ts;
  if (!read_time(msg, ev.ts, ts)) return -1;
  if (!check_key(ev.public_key) || !check_ip(ev.src_ip) || !check_ip(ev.dst_ip)) return -1;
  if ((ev.src.present && !check_key(ev.src.key)) || (ev.dst.present && !check_key(ev.dst.key))) return -1;
  int64_t ws = -1, we = -1;
  uint64_t t;
  if (ev.ws.s >= 0) {
    if (!read_time(msg, ev.ws, t)) return -1;
    ws = int64_t(t);
  }
  if (ev.we.s >= 0) {
    if (!read_time(msg, ev.we, t)) return -1;
    we = int64_t(t);
  }
  Out o(out, out + room);
  write_line(o, msg, ev, ts, ws, we, received_ms);
  if (!o.ok()) return -1;
  *event_id_at = ev.event_id.s;
  return o.pos() - out;
}

// The binding in plain Node-API (one call per event: node-addon-api's wrappers cost more here
// than the work). Bad arguments are a programming error: they throw a TypeError.
static napi_value FlowEventJsonCall(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 7) {
    napi_throw_type_error(env, nullptr, "flowEventJson(src, start, end, out, at, receiveMs, meta)");
    return nullptr;
  }
  void *src, *out, *meta;
  size_t src_len, out_len, meta_len;
  uint32_t start, end, at;
  double received;
  napi_typedarray_type meta_type;
  if (napi_get_buffer_info(env, argv[0], &src, &src_len) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &start) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &end) != napi_ok ||
      napi_get_buffer_info(env, argv[3], &out, &out_len) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &at) != napi_ok ||
      napi_get_value_double(env, argv[5], &received) != napi_ok ||
      napi_get_typedarray_info(env, argv[6], &meta_type, &meta_len, &meta, nullptr, nullptr) != napi_ok ||
      meta_type != napi_uint32_array || meta_len < 1 || start > end || end > src_len || at > out_len) {
    napi_throw_type_error(env, nullptr, "flowEventJson: bad arguments");
    return nullptr;
  }
  int64_t n = -1;
  // The receive time as Date.now() gives it: a whole number of ms that rfc3339 formats.
  if (received >= 0 && received < double(kYear10000) * 1000 && received == double(uint64_t(received))) {
    n = flow_event_json(static_cast<uint8_t *>(src) + start, end - start, static_cast<uint8_t *>(out) + at,
                        out_len - at, uint64_t(received), static_cast<uint32_t *>(meta));
    if (n >= 0) static_cast<uint32_t *>(meta)[0] += start;
  }
  napi_create_int64(env, n, &result);
  return result;
}

void register_flow_event_json(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "flowEventJson", NAPI_AUTO_LENGTH, FlowEventJsonCall, nullptr, &fn);
  napi_set_named_property(env, exports, "flowEventJson", fn);
}

// Helpers shared by the addon's BPF parts (see bpf_util.h).
#include "bpf_util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <mutex>

namespace {
std::mutex g_log_mu;
std::string g_log;
}  // namespace

// libbpf's messages (verifier log included) go to a bounded buffer that errors quote.
int CaptureLibbpfLog(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  // One message can be a whole verifier log: size it first, keep the tail (the reason is last).
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::string msg(n + 1, '\0');
  vsnprintf(&msg[0], msg.size(), fmt, args);
  msg.resize(n);
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log += msg;
  if (g_log.size() > 16384) g_log.erase(0, g_log.size() - 16384);
  return 0;
}

std::string TakeLog() {
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::string s;
  s.swap(g_log);
  // Keep the end of the log: the verifier's reason is at the bottom.
  if (s.size() > 4000) s = "..." + s.substr(s.size() - 4000);
  return s;
}

// The symbolic name of every errno (glibc >= 2.32): a short list here once turned ENOSYS ("no BPF
// in this kernel") into EUNKNOWN, and the daemon's hint for it never showed.
const char *ErrnoName(int err) {
  const char *name = strerrorname_np(err);
  return name ? name : "EUNKNOWN";
}

// A JS Error carrying errno and its symbolic code, so callers can branch on err.code.
Napi::Error ErrnoError(Napi::Env env, int err, const std::string &msg) {
  if (err < 0) err = -err;
  Napi::Error e = Napi::Error::New(env, msg + " (" + ErrnoName(err) + ": " + strerror(err) + ")");
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  return e;
}

// EPERM is missing capabilities; EACCES on load is the verifier refusing a program.
std::string PrivilegeHint(int err) {
  if (err < 0) err = -err;
  if (err == EPERM)
    return "; wgflow needs root or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN";
  return "";
}


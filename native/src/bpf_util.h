// Helpers shared by the addon's BPF parts (addon.cc: the flow datapath; drops.cc: the drop
// probe): libbpf's log captured for error messages, and errors that carry errno.
#pragma once

#include <napi.h>

#include <bpf/libbpf.h>

#include <cstdarg>
#include <string>

// libbpf's print callback: keeps warnings and the verifier log in a bounded buffer.
int CaptureLibbpfLog(enum libbpf_print_level level, const char *fmt, va_list args);
// What libbpf printed since the last call (the tail: the verifier's reason is last).
std::string TakeLog();
// The symbolic name of an errno ("ENOSYS").
const char *ErrnoName(int err);
// A JS Error carrying errno and its symbolic code, so callers can branch on err.code.
Napi::Error ErrnoError(Napi::Env env, int err, const std::string &msg);
// "; wgflow needs root or ..." for EPERM, else "".
std::string PrivilegeHint(int err);

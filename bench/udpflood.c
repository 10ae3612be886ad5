// A UDP flood for bench/drops.ts: datagrams to one address and port, as fast as the machine allows
// (or at RATE per second), in sendmmsg batches, from SPORTS sockets bound to consecutive source
// ports (SPORTS drop keys). Compiled at bench time (clang -O2). Sends only where the namespace's
// routes lead; the benchmark runs it inside namespaces it created.
//
//   udpflood DST_IPV4 DPORT SPORT SPORTS SIZE RATE SECONDS
//
// Prints one JSON line: {"sent":N,"seconds":S,"errors":E,"cpu_ns":C} (cpu_ns: this process's user +
// system time, which includes the softirq work a veth receive does in the sender's context).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SPORTS 1024

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: udpflood DST_IPV4 DPORT SPORT SPORTS SIZE RATE SECONDS\n");
    return 2;
  }
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
    fprintf(stderr, "bad address %s\n", argv[1]);
    return 2;
  }
  int sport = atoi(argv[3]), nsports = atoi(argv[4]), size = atoi(argv[5]);
  double rate = atof(argv[6]), seconds = atof(argv[7]);
  if (nsports < 1 || nsports > MAX_SPORTS || size < 1 || size > 1400 || seconds <= 0) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  static int fds[MAX_SPORTS];
  for (int i = 0; i < nsports; i++) {
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(sport + i))};
    fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&src, sizeof(src)) != 0 ||
        connect(fds[i], (struct sockaddr *)&dst, sizeof(dst)) != 0) {
      fprintf(stderr, "socket %d: %s\n", i, strerror(errno));
      return 1;
    }
  }
  static char payload[1400];
  memset(payload, 0x5a, sizeof(payload));
  struct iovec iov = {.iov_base = payload, .iov_len = (size_t)size};
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof(msgs));
  for (int i = 0; i < BATCH; i++) {
    msgs[i].msg_hdr.msg_iov = &iov;
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t sent = 0, errors = 0;
  double t0 = now(), t = t0;
  for (unsigned n = 0; t - t0 < seconds; n++) {
    // Paced: never ahead of RATE * elapsed (a burst of one batch at most).
    if (rate > 0 && (double)sent >= rate * (t - t0)) {
      struct timespec ns = {0, 50000};
      nanosleep(&ns, NULL);
      t = now();
      continue;
    }
    int r = sendmmsg(fds[n % (unsigned)nsports], msgs, BATCH, 0);
    if (r > 0)
      sent += (uint64_t)r;
    else
      errors++;  // e.g. ENOBUFS when a queue is full: counted, the flood goes on
    if ((n & 15) == 0 || rate > 0) t = now();
  }
  double elapsed = now() - t0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  printf("{\"sent\":%llu,\"seconds\":%.6f,\"errors\":%llu,\"cpu_ns\":%.0f}\n", (unsigned long long)sent, elapsed,
         (unsigned long long)errors, cpu * 1e9);
  return 0;
}

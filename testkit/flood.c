// A TCP SYN flood for the hostile tests: every packet a new flow (its own 5-tuple), sent as fast
// as asked (or as the machine allows) through a raw socket, so the routing table takes it into a
// WireGuard interface of the namespace it runs in. Compiled at test time (clang -O2); needs
// CAP_NET_RAW. Nothing is sent anywhere but where the namespace's routes lead.
//
//   flood SRC SRC_COUNT DST DST_COUNT DPORT DPORT_COUNT RATE SECONDS
//
// Flow i (0, 1, 2, ...) is, with P = 64512 source ports (1024-65535):
//   source port 1024 + i % P, destination port DPORT + (i / P) % DPORT_COUNT,
//   destination DST + (i / P / DPORT_COUNT) % DST_COUNT,
//   source SRC + (i / P / DPORT_COUNT / DST_COUNT) % SRC_COUNT   (addresses counted up from SRC, DST)
// so no 5-tuple repeats for P * DPORT_COUNT * DST_COUNT * SRC_COUNT flows (more are refused).
// RATE packets per second (0: as fast as it can) for SECONDS, in sendmmsg batches of 256.
// Prints one JSON line: {"sent":N,"seconds":S,"rate":R,"errors":E,"firstError":"..."}.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256
#define PKT 40
#define PORTS 64512u

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  return sum;
}

// IPv4 + TCP SYN, 40 bytes, checksums filled in (the kernel fills the IP id and checksum anyway).
static void build(uint8_t *p, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq) {
  memset(p, 0, PKT);
  p[0] = 0x45;
  p[2] = 0;
  p[3] = PKT;
  p[6] = 0x40;  // DF
  p[8] = 64;    // TTL
  p[9] = IPPROTO_TCP;
  memcpy(p + 12, &src, 4);
  memcpy(p + 16, &dst, 4);
  uint16_t ipsum = fold(sum16(p, 20, 0));
  p[10] = ipsum >> 8;
  p[11] = ipsum & 0xff;
  uint8_t *t = p + 20;
  t[0] = sport >> 8;
  t[1] = sport & 0xff;
  t[2] = dport >> 8;
  t[3] = dport & 0xff;
  t[4] = seq >> 24;
  t[5] = seq >> 16;
  t[6] = seq >> 8;
  t[7] = seq;
  t[12] = 5 << 4;  // data offset: 20 bytes
  t[13] = 0x02;    // SYN
  t[14] = 0xfa;    // window 64240
  t[15] = 0xf0;
  // Pseudo-header: addresses, protocol, TCP length.
  uint32_t sum = sum16(p + 12, 8, 0) + IPPROTO_TCP + 20;
  uint16_t tsum = fold(sum16(t, 20, sum));
  t[16] = tsum >> 8;
  t[17] = tsum & 0xff;
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: flood SRC SRC_COUNT DST DST_COUNT DPORT DPORT_COUNT RATE SECONDS\n");
    return 2;
  }
  struct in_addr src0, dst0;
  if (!inet_aton(argv[1], &src0) || !inet_aton(argv[3], &dst0)) {
    fprintf(stderr, "flood: bad address\n");
    return 2;
  }
  uint32_t srcCount = strtoul(argv[2], 0, 10), dstCount = strtoul(argv[4], 0, 10);
  uint32_t dport0 = strtoul(argv[5], 0, 10), dportCount = strtoul(argv[6], 0, 10);
  double rate = atof(argv[7]), seconds = atof(argv[8]);
  if (!srcCount || !dstCount || !dportCount || dport0 + dportCount > 65536 || seconds <= 0) {
    fprintf(stderr, "flood: bad counts\n");
    return 2;
  }
  double tuples = (double)PORTS * dportCount * dstCount * srcCount;
  if (rate > 0 && rate * seconds > tuples) {
    fprintf(stderr, "flood: %.0f flows need more than the %.0f distinct 5-tuples given\n", rate * seconds, tuples);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    perror("flood: socket");
    return 1;
  }
  int sndbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

  static uint8_t pkts[BATCH][PKT];
  static struct sockaddr_in to[BATCH];
  static struct iovec iov[BATCH];
  static struct mmsghdr msgs[BATCH];
  uint32_t hs = ntohl(src0.s_addr), hd = ntohl(dst0.s_addr);
  uint64_t sent = 0, errors = 0;
  char firstError[128] = "";
  double t0 = now(), end = t0 + seconds;
  for (;;) {
    double t = now();
    if (t >= end || sent >= tuples) break;
    if (rate > 0) {
      double due = (t - t0) * rate;
      if ((double)sent >= due) {
        struct timespec ts = {0, 100000};  // 100 us
        nanosleep(&ts, 0);
        continue;
      }
    }
    int n = BATCH;
    if (sent + n > tuples) n = (int)(tuples - sent);
    for (int k = 0; k < n; k++) {
      uint64_t i = sent + k;
      uint32_t sport = 1024 + (uint32_t)(i % PORTS);
      uint64_t r = i / PORTS;
      uint32_t dport = dport0 + (uint32_t)(r % dportCount);
      r /= dportCount;
      uint32_t dst = htonl(hd + (uint32_t)(r % dstCount));
      r /= dstCount;
      uint32_t src = htonl(hs + (uint32_t)(r % srcCount));
      build(pkts[k], src, dst, (uint16_t)sport, (uint16_t)dport, (uint32_t)(i * 2654435761u));
      to[k].sin_family = AF_INET;
      to[k].sin_addr.s_addr = dst;
      iov[k].iov_base = pkts[k];
      iov[k].iov_len = PKT;
      memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
      msgs[k].msg_hdr.msg_name = &to[k];
      msgs[k].msg_hdr.msg_namelen = sizeof to[k];
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
    }
    int m = sendmmsg(fd, msgs, n, 0);
    if (m < 0) {
      // A packet the kernel refused is not sent; the next batch starts with the same flow.
      if (!errors) snprintf(firstError, sizeof firstError, "%s", strerror(errno));
      errors++;
      continue;
    }
    sent += m;
  }
  double secs = now() - t0;
  printf("{\"sent\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"errors\":%llu,\"firstError\":\"%s\"}\n", (unsigned long long)sent, secs,
         sent / secs, (unsigned long long)errors, firstError);
  return 0;
}

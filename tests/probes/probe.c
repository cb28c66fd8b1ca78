/* probe: socket checks busybox cannot make, for tests/sandbox.rs.
 * Built with `gcc -static` by the test and copied into the test image.
 *
 *   probe raw             socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
 *   probe packet          socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)
 *   probe packet-write    one frame sent on an AF_PACKET socket bound to lo
 *   probe uds-connect P   connect to the Unix socket P, send "ping", print the reply
 *   probe uds-bind P      bind and listen on the Unix socket P, then exit
 *   probe uds-serve P [G] bind P (group G, mode 0660, as dockerd --group does) and
 *                         answer "pong" to every client, forever
 *   probe nnp             print the no_new_privs bit (gVisor's /proc/self/status lacks it)
 *   probe get A P TARGET  TCP to IPv4 A port P, send `GET TARGET HTTP/1.0` (a path, or a
 *                         URL when A:P is a proxy), print the status line and the last body line
 *   probe connect A P H:N ask the proxy at A:P to `CONNECT H:N`; on 200, GET / through the tunnel
 *   probe get-from S A P TARGET  get, from local port S (a service sandbox opening a connection
 *                         from its service port, which a stateless reply rule might let through)
 *   probe udp-send A P TEXT  one UDP datagram to IPv4 A port P, broadcast allowed (SO_BROADCAST)
 *   probe udp-recv P      print "udp-recv: <text>" for each datagram to port P, forever
 *
 * get, get-from and connect give up after 4 s ("FAIL timeout": a firewall drop looks like that).
 *
 * Each prints "<check>: ok" or "<check>: FAIL errno=N (text)" and exits 0 or 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(const char *check) {
  int e = errno;
  printf("%s: FAIL errno=%d (%s)\n", check, e, strerror(e));
  return 1;
}

static int ok(const char *check) {
  printf("%s: ok\n", check);
  return 0;
}

static int open_close(const char *check, int domain, int type, int protocol) {
  int fd = socket(domain, type, protocol);
  if (fd < 0) return fail(check);
  close(fd);
  return ok(check);
}

static int packet_write(void) {
  int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (fd < 0) return fail("packet-write");
  struct sockaddr_ll to;
  memset(&to, 0, sizeof to);
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_IP);
  to.sll_ifindex = if_nametoindex("lo");
  to.sll_halen = 6;
  unsigned char frame[60] = {0};
  frame[12] = 0x08; /* ethertype IPv4 */
  if (sendto(fd, frame, sizeof frame, 0, (struct sockaddr *)&to, sizeof to) < 0) return fail("packet-write");
  return ok("packet-write");
}

static int unix_socket(const char *path, struct sockaddr_un *address) {
  memset(address, 0, sizeof *address);
  address->sun_family = AF_UNIX;
  strncpy(address->sun_path, path, sizeof address->sun_path - 1);
  return socket(AF_UNIX, SOCK_STREAM, 0);
}

static void timed_out(int signal) {
  (void)signal;
  printf("FAIL timeout\n");
  _exit(1);
}

static int ipv4(struct sockaddr_in *to, const char *address, const char *port) {
  memset(to, 0, sizeof *to);
  to->sin_family = AF_INET;
  to->sin_port = htons(atoi(port));
  return inet_pton(AF_INET, address, &to->sin_addr) == 1 ? 0 : -1;
}

/* Binds fd to local port `from` (any address); 0 leaves the port to the kernel. */
static int bind_port(int fd, int from) {
  if (!from) return 0;
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  struct sockaddr_in local;
  memset(&local, 0, sizeof local);
  local.sin_family = AF_INET;
  local.sin_port = htons(from);
  return bind(fd, (struct sockaddr *)&local, sizeof local);
}

static int tcp_connect_from(const char *check, int from, const char *address, const char *port) {
  struct sockaddr_in to;
  if (ipv4(&to, address, port) < 0) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind_port(fd, from) < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
    fail(check);
    return -1;
  }
  return fd;
}

static int tcp_connect(const char *check, const char *address, const char *port) {
  return tcp_connect_from(check, 0, address, port);
}

/* Reads until EOF; prints the first line and the last non-empty line. */
static int report(const char *check, int fd) {
  static char buffer[65536];
  size_t length = 0;
  ssize_t n;
  while (length < sizeof buffer - 1 && (n = read(fd, buffer + length, sizeof buffer - 1 - length)) > 0) length += n;
  buffer[length] = 0;
  char *first_end = strpbrk(buffer, "\r\n");
  char *last = buffer;
  for (char *line = strtok(buffer + (first_end ? first_end - buffer + 1 : length), "\r\n"); line; line = strtok(NULL, "\r\n"))
    last = line;
  if (first_end) *first_end = 0;
  printf("%s: %s | %s\n", check, buffer, last == buffer ? "" : last);
  return 0;
}

static int http_get_from(const char *check, int from, const char *address, const char *port, const char *target) {
  int fd = tcp_connect_from(check, from, address, port);
  if (fd < 0) return 1;
  char request[1024];
  snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nUser-Agent: probe\r\n\r\n", target);
  if (write(fd, request, strlen(request)) < 0) return fail(check);
  return report(check, fd);
}

static int http_get(const char *address, const char *port, const char *target) {
  return http_get_from("get", 0, address, port, target);
}

static int udp_send(const char *address, const char *port, const char *text) {
  struct sockaddr_in to;
  if (ipv4(&to, address, port) < 0) return 2;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int on = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof on) < 0) return fail("udp-send");
  if (sendto(fd, text, strlen(text), 0, (struct sockaddr *)&to, sizeof to) < 0) return fail("udp-send");
  return ok("udp-send");
}

static int udp_recv(const char *port) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0 || bind_port(fd, atoi(port)) < 0) return fail("udp-recv");
  ok("udp-recv");
  for (;;) {
    char text[512];
    ssize_t n = recv(fd, text, sizeof text - 1, 0);
    if (n < 0) continue;
    text[n] = 0;
    printf("udp-recv: %s\n", text);
  }
}

static int http_connect(const char *address, const char *port, const char *target) {
  int fd = tcp_connect("connect", address, port);
  if (fd < 0) return 1;
  char request[1024];
  snprintf(request, sizeof request, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
  if (write(fd, request, strlen(request)) < 0) return fail("connect");
  /* The proxy's reply header, byte by byte up to the blank line. */
  char header[4096] = {0};
  size_t length = 0;
  while (length < sizeof header - 1 && read(fd, header + length, 1) == 1) {
    length++;
    if (length >= 4 && !memcmp(header + length - 4, "\r\n\r\n", 4)) break;
  }
  header[strcspn(header, "\r\n")] = 0;
  if (strncmp(header, "HTTP/1.1 200", 12) && strncmp(header, "HTTP/1.0 200", 12)) {
    printf("connect: refused %s\n", header);
    return 1;
  }
  const char *get = "GET / HTTP/1.0\r\n\r\n";
  if (write(fd, get, strlen(get)) < 0) return fail("connect");
  return report("connect", fd);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) return 2;
  const char *check = argv[1];
  if (!strcmp(check, "raw")) return open_close(check, AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (!strcmp(check, "packet")) return open_close(check, AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (!strcmp(check, "packet-write")) return packet_write();
  if (!strcmp(check, "nnp")) {
    int bit = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
    if (bit < 0) return fail(check);
    printf("%s: %d\n", check, bit);
    return 0;
  }
  if ((!strcmp(check, "get") || !strcmp(check, "connect")) && argc == 5) {
    signal(SIGALRM, timed_out);
    alarm(4);
    return !strcmp(check, "get") ? http_get(argv[2], argv[3], argv[4]) : http_connect(argv[2], argv[3], argv[4]);
  }
  if (!strcmp(check, "get-from") && argc == 6) {
    signal(SIGALRM, timed_out);
    alarm(4);
    return http_get_from(check, atoi(argv[2]), argv[3], argv[4], argv[5]);
  }
  if (!strcmp(check, "udp-send") && argc == 5) return udp_send(argv[2], argv[3], argv[4]);
  if (!strcmp(check, "udp-recv") && argc == 3) return udp_recv(argv[2]);
  if (argc < 3) return 2;
  struct sockaddr_un address;
  int fd = unix_socket(argv[2], &address);
  if (fd < 0) return fail(check);
  if (!strcmp(check, "uds-connect")) {
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) return fail(check);
    char reply[64] = {0};
    if (write(fd, "ping\n", 5) != 5 || read(fd, reply, sizeof reply - 1) < 0) return fail(check);
    reply[strcspn(reply, "\n")] = 0;
    printf("%s: ok reply=%s\n", check, reply);
    return 0;
  }
  if (!strcmp(check, "uds-bind") || !strcmp(check, "uds-serve")) {
    unlink(argv[2]);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, 16) < 0) return fail(check);
    /* Not fatal: runsc 20221219 refuses chown on a host-UDS socket (EPERM);
     * the test then sets what dockerd would from the host side. */
    if (argc > 3 && (chown(argv[2], -1, atoi(argv[3])) < 0 || chmod(argv[2], 0660) < 0)) fail("uds-serve-chown");
    ok(check);
    if (!strcmp(check, "uds-bind")) return 0;
    for (;;) {
      int client = accept(fd, NULL, NULL);
      if (client < 0) continue;
      char buffer[64];
      if (read(client, buffer, sizeof buffer) >= 0 && write(client, "pong\n", 5) < 0) perror("write");
      close(client);
    }
  }
  return 2;
}

#include "transport_test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

namespace flotilla::testsupport {
namespace {

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  return addr;
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<TcpRelay>> TcpRelay::Start(uint16_t target_port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return UnavailableError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr = Loopback(0);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return UnavailableError(std::string("relay listen: ") + std::strerror(errno));
  }
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(fd);
    return UnavailableError(std::string("eventfd: ") + std::strerror(errno));
  }
  std::unique_ptr<TcpRelay> relay(new TcpRelay(fd, wake, ntohs(addr.sin_port), target_port));
  relay->thread_ = std::thread([r = relay.get()] { r->Run(); });
  return relay;
}

TcpRelay::TcpRelay(int listen_fd, int wake_fd, uint16_t port, uint16_t target)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port), target_(target) {}

TcpRelay::~TcpRelay() {
  stop_.store(true);
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  thread_.join();
  ::close(wake_fd_);
}

void TcpRelay::Sever() {
  sever_.store(true);
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  while (!severed_.load() && !stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void TcpRelay::Run() {
  std::map<int, int> peer;  // fd -> the other end, both directions
  auto close_all = [&] {
    for (const auto& [fd, other] : peer) {
      (void)other;
      linger hard{1, 0};  // RST: the far end sees the connection die, no FIN handshake
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
      ::close(fd);
    }
    peer.clear();
  };
  while (!stop_.load()) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_, POLLIN, 0});
    if (listen_fd_ >= 0) fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& [fd, other] : peer) fds.push_back({fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) break;
    if (sever_.load()) {
      close_all();
      if (listen_fd_ >= 0) ::close(listen_fd_);
      listen_fd_ = -1;
      severed_.store(true);
      continue;
    }
    for (const pollfd& p : fds) {
      if (p.revents == 0 || p.fd == wake_fd_) continue;
      if (p.fd == listen_fd_) {
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in target = Loopback(target_);
        if (upstream < 0 || ::connect(upstream, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
          ::close(client);
          if (upstream >= 0) ::close(upstream);
          continue;
        }
        peer[client] = upstream;
        peer[upstream] = client;
        accepted_.fetch_add(1);
        continue;
      }
      auto it = peer.find(p.fd);
      if (it == peer.end()) continue;  // closed earlier in this round
      char buf[65536];
      const ssize_t n = ::recv(p.fd, buf, sizeof(buf), 0);
      const int other = it->second;
      if (n <= 0 || !WriteAll(other, buf, static_cast<size_t>(n))) {
        ::close(p.fd);
        ::close(other);
        peer.erase(p.fd);
        peer.erase(other);
      }
    }
  }
  close_all();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

bool PollUntil(const std::vector<protocol::Transport*>& transports, const std::function<bool()>& done,
               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    size_t n = 0;
    for (protocol::Transport* t : transports) n += t->Drain();
    // With one transport, block in its queue instead of spinning.
    if (n == 0 && transports.size() == 1) transports[0]->Poll(std::chrono::milliseconds(5));
    else if (n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace flotilla::testsupport

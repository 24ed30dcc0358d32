// TransportInbox: the bounded queue between network threads and the owner, with parking
// of payloads beyond a memory budget in a spool file (transport.h).
#include <utility>

#include "flotilla/protocol/transport.h"

namespace flotilla::protocol {

TransportInbox::TransportInbox(size_t capacity, size_t memory_budget, std::filesystem::path spill_dir)
    : queue_(capacity), memory_budget_(memory_budget), spill_dir_(std::move(spill_dir)) {}

TransportInbox::~TransportInbox() = default;

bool TransportInbox::PushMessage(Message message) {
  if (memory_budget_ == 0) return queue_.TryPush(Event(std::move(message)));
  const size_t cost = Cost(message);
  // Held while pushing so that the spool is never emptied between an append and the
  // push of its Parked event (Unpark empties it when no parked message is queued).
  std::lock_guard<std::mutex> lock(spill_mu_);
  if (in_memory_ + cost > memory_budget_ && !message.payload.empty() && !spool_failed_) {
    if (!spool_) {
      Result<std::unique_ptr<Spool>> made = Spool::Create(spill_dir_);
      if (made.ok()) {
        spool_ = std::move(made).value();
      } else {
        spool_failed_ = true;
      }
    }
    if (spool_) {
      Result<uint64_t> at = spool_->Append(message.payload);
      if (at.ok()) {
        Parked parked{std::move(message), *at, 0};
        parked.size = parked.message.payload.size();
        parked.message.payload = Bytes();  // releases the buffer
        if (!queue_.TryPush(Event(std::move(parked)))) return false;
        ++parked_queued_;
        parked_total_.fetch_add(1);
        return true;
      }
      spool_failed_ = true;  // e.g. the disk is full: hold messages in memory from now on
    }
  }
  if (!queue_.TryPush(Event(std::move(message)))) return false;
  in_memory_ += cost;
  return true;
}

std::optional<Message> TransportInbox::Unpark(Parked parked) {
  std::lock_guard<std::mutex> lock(spill_mu_);
  Result<Bytes> payload = spool_->Read(parked.offset, parked.size);
  if (--parked_queued_ == 0) {
    // Nothing parked is waiting: start the file over (failure only means it grows on).
    if (spool_->Clear().ok()) spool_failed_ = false;
  }
  if (!payload.ok()) {
    unreadable_.fetch_add(1);
    return std::nullopt;
  }
  parked.message.payload = std::move(payload).value();
  return std::move(parked.message);
}

size_t TransportInbox::Dispatch(std::chrono::milliseconds timeout, size_t max_events, const MessageHandler& on_message,
                                const ConnectionStateHandler& on_state, ConnectionState current) {
  size_t n = 0;
  std::optional<Event> event = max_events > 0 ? queue_.PopFor(timeout) : std::nullopt;
  while (event) {
    ++n;
    if (auto* m = std::get_if<Message>(&*event)) {
      if (memory_budget_ != 0) {
        std::lock_guard<std::mutex> lock(spill_mu_);
        in_memory_ -= Cost(*m);
      }
      if (on_message) on_message(*m);
    } else if (auto* p = std::get_if<Parked>(&*event)) {
      std::optional<Message> unparked = Unpark(std::move(*p));
      if (unparked && on_message) on_message(*unparked);
    } else if (auto* s = std::get_if<StateEvent>(&*event)) {
      if (on_state) on_state(s->state, s->cause);
    }
    if (n >= max_events) break;
    event = queue_.TryPop();
  }
  if (state_lost_.exchange(false) && on_state) {
    on_state(current, Status::Ok());
    ++n;
  }
  return n;
}

size_t TransportInbox::bytes_in_memory() const {
  std::lock_guard<std::mutex> lock(spill_mu_);
  return in_memory_;
}

}  // namespace flotilla::protocol

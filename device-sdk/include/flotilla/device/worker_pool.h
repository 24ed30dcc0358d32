// A small fixed-size worker pool for the agent's CPU-heavy work (training, SecAgg
// crypto). Many agents in one process (the simulator) share one pool, so CPU use stays
// bounded by the pool size whatever the fleet size; memory stays bounded because an agent
// has at most one task in flight.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace flotilla::device {

class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // Runs `task` later on some thread. Thread-safe; never blocks on the task.
  virtual void Post(std::function<void()> task) = 0;
};

class WorkerPool final : public TaskRunner {
 public:
  // `threads` workers (0 = hardware concurrency, at least 1).
  explicit WorkerPool(unsigned threads);
  // Finishes the queued tasks, then joins the workers.
  ~WorkerPool() override;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Post(std::function<void()> task) override;
  size_t threads() const { return workers_.size(); }

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  std::vector<std::thread> workers_;
};

}  // namespace flotilla::device

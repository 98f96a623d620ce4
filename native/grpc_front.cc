// The native gRPC front of a worker: gRPC's C++ server, relaying every call to its worker as bytes.
//
// The Python front (service/protocols/grpc_front.py) spends about 0.3 ms of CPU per call in grpc.aio's Python layer
// alone on a 2.6 GHz core, as much as a quarter of what the worker spends answering; here gRPC's C++ core does the
// same work for a few microseconds. The wire to the worker is the same (service/protocols/grpc_relay.py): frames
// of a header (payload length u32, kind u8, call id u64; little-endian) and a payload. This front sends CALL (the
// method, the deadline, the credentials, the request's bytes as they came), CANCEL, READY and STOPPED; the worker
// sends REPLY, HEALTH (the statuses for health Watch streams), STOP (drain within a grace time).
//
// What is answered here: HTTP/2 and gRPC (message size limit, compression), health Watch streams (from the
// statuses the worker pushes), UNIMPLEMENTED for the protocol's streaming RPC and unknown methods. Every unary call
// of the inference service and health Check go to the worker; so does each message of a server reflection stream
// (one request, one response).
//
//   grpc_front --fd FD --address HOST:PORT --max-message-bytes N [--workers-socket PATH] [--reuseport]
//              [--log-level LEVEL]

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

enum Kind : uint8_t { CALL = 1, CANCEL = 2, REPLY = 3, HEALTH = 4, STOP = 5, READY = 6, STOPPED = 7 };
constexpr size_t HEADER_SIZE = 13;  // <IBQ
constexpr const char* INFERENCE = "/inference.GRPCInferenceService/";
constexpr const char* STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer";
constexpr const char* HEALTH_CHECK = "/grpc.health.v1.Health/Check";
constexpr const char* HEALTH_WATCH = "/grpc.health.v1.Health/Watch";
constexpr const char* REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
constexpr int SERVICE_UNKNOWN = 3;
constexpr int NOT_SERVING = 2;
constexpr double NO_LIMIT_S = 365.0 * 24 * 3600;

bool g_debug = false;

std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char code[8];
      std::snprintf(code, sizeof code, "\\u%04x", c);
      out += code;
    } else {
      out += c;
    }
  }
  return out;
}

// A log line in the service's JSON shape (service/logs.py).
void log_line(const char* level, const std::string& message) {
  if (!g_debug && std::strcmp(level, "debug") == 0) return;
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  gmtime_r(&now.tv_sec, &utc);
  char stamp[40];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  std::fprintf(stderr,
               "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"logger\":\"service.protocols.grpc_server\","
               "\"message\":\"%s\",\"request_id\":\"-\"}\n",
               stamp, now.tv_nsec / 1000000, level, json_escape(message).c_str());
  std::fflush(stderr);
}

void put_u16(std::string& out, uint16_t v) { out.append(reinterpret_cast<const char*>(&v), 2); }
void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

// The socket to the worker. Frames go out at once (`send`) or gather until `flush` (`queue`: the completion queue's
// thread queues the calls of one burst of events and sends them in one write, so the worker reads them together and
// batches them together); frames come in on the reader thread, many per read.
class Relay {
 public:
  explicit Relay(int fd) : fd_(fd) {}

  bool send(Kind kind, uint64_t call_id, const std::string& head, const std::string& body = "") {
    std::lock_guard<std::mutex> lock(write_);
    append(outgoing_, kind, call_id, head, body);
    return write_out();
  }

  void queue(Kind kind, uint64_t call_id, const std::string& head, const std::string& body = "") {
    std::lock_guard<std::mutex> lock(write_);
    append(outgoing_, kind, call_id, head, body);
  }

  bool flush() {
    std::lock_guard<std::mutex> lock(write_);
    return write_out();
  }

  // The next frame; false when the worker closed its end.
  bool receive(Kind& kind, uint64_t& call_id, std::string& payload) {
    while (true) {
      size_t available = incoming_.size() - start_;
      if (available >= HEADER_SIZE) {
        const char* header = incoming_.data() + start_;
        uint32_t length;
        std::memcpy(&length, header, 4);
        if (available >= HEADER_SIZE + length) {
          kind = static_cast<Kind>(header[4]);
          std::memcpy(&call_id, header + 5, 8);
          payload.assign(header + HEADER_SIZE, length);
          start_ += HEADER_SIZE + length;
          return true;
        }
      }
      incoming_.erase(0, start_);
      start_ = 0;
      char chunk[1 << 16];
      ssize_t got = ::recv(fd_, chunk, sizeof chunk, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      incoming_.append(chunk, static_cast<size_t>(got));
    }
  }

  void close() { ::shutdown(fd_, SHUT_RDWR); }

 private:
  static void append(std::string& out, Kind kind, uint64_t call_id, const std::string& head, const std::string& body) {
    put_u32(out, static_cast<uint32_t>(head.size() + body.size()));
    out.push_back(static_cast<char>(kind));
    put_u64(out, call_id);
    out += head;
    out += body;
  }

  bool write_out() {  // under the write lock
    const char* data = outgoing_.data();
    size_t left = outgoing_.size();
    while (left > 0) {
      ssize_t sent = ::send(fd_, data, left, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        outgoing_.clear();
        return false;
      }
      data += sent;
      left -= static_cast<size_t>(sent);
    }
    outgoing_.clear();
    return true;
  }

  int fd_;
  std::mutex write_;
  std::string outgoing_;
  std::string incoming_;
  size_t start_ = 0;
};

// The few values of the worker's JSON messages ({"grace_s": 8.0}, {"": 1, "sentiment": 1}): a flat object of
// strings to numbers.
std::map<std::string, double> parse_flat_json(const std::string& text) {
  std::map<std::string, double> values;
  size_t at = 0;
  auto skip = [&] {
    while (at < text.size() && (text[at] == ' ' || text[at] == ',' || text[at] == '{' || text[at] == '}')) ++at;
  };
  while (true) {
    skip();
    if (at >= text.size() || text[at] != '"') break;
    std::string key;
    for (++at; at < text.size() && text[at] != '"'; ++at) {
      if (text[at] == '\\' && at + 1 < text.size()) ++at;
      key += text[at];
    }
    at = text.find(':', at);
    if (at == std::string::npos) break;
    char* end = nullptr;
    values[key] = std::strtod(text.c_str() + at + 1, &end);
    at = static_cast<size_t>(end - text.c_str());
  }
  return values;
}

// grpc.health.v1.HealthCheckRequest's service (field 1); false if the bytes are not such a message.
bool parse_health_request(const std::string& data, std::string& service) {
  size_t at = 0;
  auto varint = [&](uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at >= data.size()) return false;
      uint8_t byte = static_cast<uint8_t>(data[at++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  };
  while (at < data.size()) {
    uint64_t key, value;
    if (!varint(key) || key >> 3 == 0) return false;
    switch (key & 7) {
      case 0:
        if (!varint(value)) return false;
        break;
      case 1:
        if ((at += 8) > data.size()) return false;
        break;
      case 5:
        if ((at += 4) > data.size()) return false;
        break;
      case 2:
        if (!varint(value) || value > data.size() - at) return false;
        if (key >> 3 == 1) service.assign(data, at, value);
        at += value;
        break;
      default:
        return false;
    }
  }
  return true;
}

// A STOP's grace time in seconds ({"grace_s": 8.0}); 0 when it says none.
double grace_of(const std::string& payload) {
  auto values = parse_flat_json(payload);
  return values.count("grace_s") ? std::max(values["grace_s"], 0.0) : 0.0;
}

std::string flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const auto& slice : slices) out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return out;
}

grpc::ByteBuffer to_buffer(const char* data, size_t size) {
  grpc::Slice slice(data, size);
  return grpc::ByteBuffer(&slice, 1);
}

class Front;

// A worker's end of the relay: its socket, the calls it holds, the statuses it pushed.
struct Worker {
  explicit Worker(int fd) : relay(fd) {}
  Relay relay;
  size_t pending = 0;     // calls sent and not answered (the calls lock)
  bool stopping = false;  // sent STOP: no new calls (the calls lock)
  bool gone = false;      // its socket closed (the calls lock)
  std::thread reader;
};

// One gRPC call and its place in the completion queue: each operation's tag is a pointer to one of its `Op`s.
struct Call;
struct Op {
  enum Kind { NEW, READ, WRITE, FINISH, DONE } kind;
  Call* call;
};

enum class Role { RELAYED, REFLECTION, WATCH, REFUSED };

struct Call {
  explicit Call(Front* front_) : front(front_), stream(&context) {}
  Front* front;
  grpc::GenericServerContext context;
  grpc::GenericServerAsyncReaderWriter stream;
  grpc::ByteBuffer incoming;
  Op op_new{Op::NEW, this}, op_read{Op::READ, this}, op_write{Op::WRITE, this}, op_finish{Op::FINISH, this},
      op_done{Op::DONE, this};
  Role role = Role::REFUSED;
  std::string method;
  uint64_t id = 0;
  Worker* worker = nullptr;  // the worker answering its message in flight
  // Watch streams (guarded by the front's health lock)
  std::string service;
  int sent = -1;
  bool writing = false;
  bool finishing = false;
  // lifetime: deleted once its finish and its done have both come back
  std::atomic<int> ends{0};
};

// Two ways to run. With --fd alone, the front of one worker: that socket is the worker's relay and its STOP stops
// the front. With --workers-socket as well, the server's one front: --fd is the supervisor's control socket (READY
// out; STOP or its end stops the front), and every worker connects its relay to the Unix socket at that path;
// each call goes to the worker with the fewest calls in flight, so one client connection is served by every
// worker; a worker's STOP takes it out of the rotation and is answered STOPPED once its calls are answered.
class Front {
 public:
  Front(int fd, std::string workers_socket, std::string address, int max_message_bytes, bool reuseport)
      : control_(fd),
        control_fd_(fd),
        workers_socket_(std::move(workers_socket)),
        address_(std::move(address)),
        max_message_bytes_(max_message_bytes),
        reuseport_(reuseport) {}

  int run();

 private:
  bool shared() const { return !workers_socket_.empty(); }
  void serve_queue();
  void read_worker(Worker* worker);
  void read_control();
  void accept_workers(int listener);
  void accept_next();
  void on_new(Call* call);
  void on_read(Call* call, bool ok);
  void on_write(Call* call, bool ok);
  void on_done(Call* call);
  void end(Call* call);
  void relay_call(Call* call, const std::string& message);
  Worker* choose_worker();
  bool settle(Worker* worker);
  void answer(Worker* worker, uint64_t id, const std::string& payload);
  void finish(Call* call, const grpc::Status& status);
  void set_health(Worker* worker, const std::map<std::string, double>& statuses);
  void refresh_watchers();
  int status_of(const std::string& service);
  void write_status(Call* call);
  void worker_stopping(Worker* worker);
  void worker_gone(Worker* worker);
  void flush_all();
  void signal_stop(double grace_s);
  void stop(double grace_s);

  Relay control_;
  int control_fd_;
  std::string workers_socket_;
  std::string address_;
  int max_message_bytes_;
  bool reuseport_;
  grpc::AsyncGenericService generic_;
  std::unique_ptr<grpc::ServerCompletionQueue> queue_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> accepting_{true};

  std::mutex calls_lock_;
  std::vector<std::unique_ptr<Worker>> workers_;  // every worker ever connected (a few: restarts are rare)
  std::unordered_map<uint64_t, Call*> pending_;
  uint64_t next_id_ = 1;

  std::mutex health_lock_;
  std::map<Worker*, std::map<std::string, int>> statuses_;  // as each worker pushed them
  std::set<Worker*> serving_;                               // connected and not stopping
  std::set<Call*> watchers_;
  bool health_final_ = false;

  std::mutex stop_lock_;
  std::condition_variable stop_signal_;
  double stop_grace_ = -2;  // -2: running; -1: stop now; >= 0: drain within that grace
};

void Front::accept_next() {
  if (!accepting_) return;
  Call* call = new Call(this);
  call->context.AsyncNotifyWhenDone(&call->op_done);
  generic_.RequestCall(&call->context, &call->stream, queue_.get(), queue_.get(), &call->op_new);
}

void Front::flush_all() {
  std::lock_guard<std::mutex> lock(calls_lock_);
  for (auto& worker : workers_) {
    if (!worker->gone) worker->relay.flush();
  }
}

void Front::serve_queue() {
  void* tag;
  bool ok;
  while (true) {
    // Events that are ready now are handled first; the calls they relay leave in one write per worker before
    // waiting, so a worker reads them together and batches them together.
    auto ready = queue_->AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC));
    if (ready == grpc::CompletionQueue::TIMEOUT) {
      flush_all();
      if (!queue_->Next(&tag, &ok)) break;
    } else if (ready == grpc::CompletionQueue::SHUTDOWN) {
      break;
    }
    Op* op = static_cast<Op*>(tag);
    Call* call = op->call;
    switch (op->kind) {
      case Op::NEW:
        if (!ok) {  // the server is shutting down: this call never started
          delete call;
          break;
        }
        accept_next();
        on_new(call);
        break;
      case Op::READ:
        on_read(call, ok);
        break;
      case Op::WRITE:
        on_write(call, ok);
        break;
      case Op::FINISH:
        end(call);
        break;
      case Op::DONE:
        on_done(call);
        break;
    }
  }
}

void Front::end(Call* call) {
  if (call->ends.fetch_add(1) + 1 == 2) delete call;
}

void Front::finish(Call* call, const grpc::Status& status) { call->stream.Finish(status, &call->op_finish); }

void Front::on_new(Call* call) {
  const std::string& method = call->context.method();
  call->method = method;
  if (method == STREAM_INFER) {
    finish(call, grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this server does not offer that RPC of the protocol"));
    return;
  }
  if (method.rfind(INFERENCE, 0) == 0 || method == HEALTH_CHECK) {
    call->role = Role::RELAYED;
  } else if (method == REFLECTION) {
    call->role = Role::REFLECTION;
  } else if (method == HEALTH_WATCH) {
    call->role = Role::WATCH;
  } else {
    finish(call, grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "Method not found!"));
    return;
  }
  call->stream.Read(&call->incoming, &call->op_read);
}

void Front::on_read(Call* call, bool ok) {
  if (!ok) {  // the client half-closed (or went away) before sending a message
    if (call->role == Role::REFLECTION) {
      finish(call, grpc::Status::OK);
    } else {
      finish(call, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the call carried no request message"));
    }
    return;
  }
  std::string message = flatten(call->incoming);
  call->incoming.Clear();
  if (call->role == Role::WATCH) {
    std::string service;
    if (!parse_health_request(message, service)) {
      finish(call, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the request does not parse as grpc.health.v1.HealthCheckRequest"));
      return;
    }
    std::lock_guard<std::mutex> lock(health_lock_);
    call->service = service;
    if (health_final_) call->finishing = true;
    watchers_.insert(call);
    write_status(call);
    return;
  }
  relay_call(call, message);
}

// Under the calls lock: the worker with the fewest calls in flight, the first connected among equals (a lone client
// keeps one worker warm instead of waking each in turn); none when every worker is stopping or gone.
Worker* Front::choose_worker() {
  Worker* chosen = nullptr;
  for (auto& worker : workers_) {
    if (worker->stopping || worker->gone) continue;
    if (chosen == nullptr || worker->pending < chosen->pending) chosen = worker.get();
  }
  return chosen;
}

// Under the calls lock: one of the worker's calls is done; whether that was the last a stopping worker held.
bool Front::settle(Worker* worker) { return --worker->pending == 0 && worker->stopping && shared(); }

void Front::relay_call(Call* call, const std::string& message) {
  std::string head;
  double timeout = -1;
  auto deadline = call->context.deadline();
  auto now = std::chrono::system_clock::now();
  if (deadline < now + std::chrono::hours(24 * 365 * 10)) {
    timeout = std::max(std::chrono::duration<double>(deadline - now).count(), 0.0);
  }
  std::string credentials;
  for (const auto& [key, value] : call->context.client_metadata()) {
    std::string name(key.data(), key.size());
    if (name != "authorization" && name != "x-api-key") continue;
    credentials += credentials.empty() ? "{" : ",";
    credentials += "\"" + json_escape(name) + "\":\"" + json_escape(std::string(value.data(), value.size())) + "\"";
  }
  if (!credentials.empty()) credentials += "}";
  head.append(reinterpret_cast<const char*>(&timeout), 8);
  put_u16(head, static_cast<uint16_t>(call->method.size()));
  put_u16(head, static_cast<uint16_t>(credentials.size()));
  head += call->method;
  head += credentials;
  std::lock_guard<std::mutex> lock(calls_lock_);  // held while queueing: a CANCEL cannot overtake its CALL
  Worker* worker = choose_worker();
  if (worker == nullptr) {
    finish(call, grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping; retry"));
    return;
  }
  call->id = next_id_++;
  call->worker = worker;
  ++worker->pending;
  pending_[call->id] = call;
  worker->relay.queue(CALL, call->id, head, message);
}

// A REPLY: <BHH code, details length, push-back length; details; push-back; the response's bytes.
void Front::answer(Worker* worker, uint64_t id, const std::string& payload) {
  Call* call;
  bool drained = false;
  {
    std::lock_guard<std::mutex> lock(calls_lock_);
    auto found = pending_.find(id);
    if (found == pending_.end() || found->second->worker != worker) return;  // cancelled meanwhile
    call = found->second;
    pending_.erase(found);
    drained = settle(worker);
  }
  if (drained) worker->relay.send(STOPPED, 0, "");
  if (payload.size() < 5) {
    finish(call, grpc::Status(grpc::StatusCode::INTERNAL, "internal error"));
    return;
  }
  uint8_t code = static_cast<uint8_t>(payload[0]);
  uint16_t details_length, pushback_length;
  std::memcpy(&details_length, payload.data() + 1, 2);
  std::memcpy(&pushback_length, payload.data() + 3, 2);
  size_t at = 5;
  std::string details = payload.substr(at, details_length);
  at += details_length;
  std::string pushback = payload.substr(at, pushback_length);
  at += pushback_length;
  if (code != 0) {
    if (!pushback.empty()) call->context.AddTrailingMetadata("grpc-retry-pushback-ms", pushback);
    finish(call, grpc::Status(static_cast<grpc::StatusCode>(code), details));
    return;
  }
  grpc::ByteBuffer response = to_buffer(payload.data() + at, payload.size() - at);
  if (call->role == Role::REFLECTION) {
    call->stream.Write(response, &call->op_write);
  } else {
    call->stream.WriteAndFinish(response, grpc::WriteOptions(), grpc::Status::OK, &call->op_finish);
  }
}

void Front::on_write(Call* call, bool ok) {
  if (call->role == Role::REFLECTION) {
    if (ok) {
      call->stream.Read(&call->incoming, &call->op_read);
    } else {
      finish(call, grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    }
    return;
  }
  std::lock_guard<std::mutex> lock(health_lock_);  // a Watch stream
  call->writing = false;
  if (!ok || watchers_.count(call) == 0) {  // the client went away (perhaps while the write was out)
    watchers_.erase(call);
    finish(call, grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    return;
  }
  write_status(call);
}

// Under the health lock: the watcher's current status if it changed (one write at a time), or its end.
void Front::write_status(Call* call) {
  if (call->writing) return;
  int status = status_of(call->service);
  if (status != call->sent) {
    call->sent = status;
    call->writing = true;
    char message[2] = {0x08, static_cast<char>(status)};
    call->stream.Write(to_buffer(message, 2), &call->op_write);
    return;
  }
  if (call->finishing) {
    watchers_.erase(call);
    finish(call, grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping"));
  }
}

// Under the health lock: SERVING if a worker taking calls says so; NOT_SERVING if any worker knows the service;
// else SERVICE_UNKNOWN. After the stop began, nothing is SERVING.
int Front::status_of(const std::string& service) {
  bool known = false;
  for (const auto& [worker, statuses] : statuses_) {
    auto found = statuses.find(service);
    if (found == statuses.end()) continue;
    known = true;
    if (!health_final_ && serving_.count(worker) && found->second != NOT_SERVING) return found->second;
  }
  return known ? NOT_SERVING : SERVICE_UNKNOWN;
}

void Front::refresh_watchers() {  // under the health lock
  for (Call* call : std::vector<Call*>(watchers_.begin(), watchers_.end())) write_status(call);
}

void Front::set_health(Worker* worker, const std::map<std::string, double>& statuses) {
  std::lock_guard<std::mutex> lock(health_lock_);
  auto& known = statuses_[worker];
  for (const auto& [service, status] : statuses) known[service] = static_cast<int>(status);
  refresh_watchers();
}

void Front::on_done(Call* call) {
  if (call->context.IsCancelled()) {
    bool was_pending = false;
    bool drained = false;
    Worker* worker = nullptr;
    {
      std::lock_guard<std::mutex> lock(calls_lock_);
      if (call->id != 0 && pending_.erase(call->id) == 1) {
        was_pending = true;  // the client went away or its deadline passed: the worker drops the call
        worker = call->worker;
        worker->relay.queue(CANCEL, call->id, "");
        drained = settle(worker);
      }
    }
    if (drained) worker->relay.send(STOPPED, 0, "");
    if (was_pending) finish(call, grpc::Status::CANCELLED);
    std::lock_guard<std::mutex> lock(health_lock_);
    if (watchers_.erase(call) == 1 && !call->writing) finish(call, grpc::Status::CANCELLED);
  }
  end(call);
}

// A worker's STOP (shared front): no new calls for it; STOPPED once those it holds are answered.
void Front::worker_stopping(Worker* worker) {
  bool drained;
  {
    std::lock_guard<std::mutex> lock(calls_lock_);
    worker->stopping = true;
    drained = worker->pending == 0;
  }
  if (drained) worker->relay.send(STOPPED, 0, "");
  std::lock_guard<std::mutex> lock(health_lock_);
  serving_.erase(worker);
  refresh_watchers();
}

// A worker's socket closed: the calls it held get UNAVAILABLE (nobody will answer them).
void Front::worker_gone(Worker* worker) {
  std::vector<Call*> calls;
  {
    std::lock_guard<std::mutex> lock(calls_lock_);
    worker->gone = true;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second->worker == worker) {
        calls.push_back(it->second);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    worker->pending = 0;
  }
  for (Call* call : calls) finish(call, grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping; retry"));
  std::lock_guard<std::mutex> lock(health_lock_);
  serving_.erase(worker);
  statuses_.erase(worker);
  refresh_watchers();
}

void Front::signal_stop(double grace_s) {
  std::lock_guard<std::mutex> lock(stop_lock_);
  if (stop_grace_ == -2 || grace_s < 0) stop_grace_ = grace_s;
  stop_signal_.notify_all();
}

void Front::read_worker(Worker* worker) {
  Kind kind;
  uint64_t id;
  std::string payload;
  while (worker->relay.receive(kind, id, payload)) {
    if (kind == REPLY) {
      answer(worker, id, payload);
    } else if (kind == HEALTH) {
      set_health(worker, parse_flat_json(payload));
    } else if (kind == STOP && shared()) {
      worker_stopping(worker);
    } else if (kind == STOP) {  // the front of this one worker: its STOP stops the front
      signal_stop(grace_of(payload));
    }
  }
  worker_gone(worker);
  if (!shared()) signal_stop(-1);  // the worker is gone: nothing in flight can be answered any more
}

void Front::read_control() {  // shared front: the supervisor's STOP, or its end
  Kind kind;
  uint64_t id;
  std::string payload;
  while (control_.receive(kind, id, payload)) {
    if (kind == STOP) signal_stop(grace_of(payload));
  }
  signal_stop(-1);
}

void Front::accept_workers(int listener) {
  while (true) {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // the listener was shut down: the front is stopping
    }
    auto owned = std::make_unique<Worker>(fd);
    Worker* worker = owned.get();
    {
      std::lock_guard<std::mutex> lock(calls_lock_);
      workers_.push_back(std::move(owned));
    }
    {
      std::lock_guard<std::mutex> lock(health_lock_);
      serving_.insert(worker);
      statuses_[worker];
    }
    worker->reader = std::thread(&Front::read_worker, this, worker);
    log_line("debug", "a worker connected its relay");
  }
}

// Health NOT_SERVING for every service (and each Watch stream told, then ended); no new calls; those in flight get
// the grace (under a second: no limit, as uvicorn), then are cancelled.
void Front::stop(double grace_s) {
  {
    std::lock_guard<std::mutex> lock(health_lock_);
    health_final_ = true;
    for (Call* call : std::vector<Call*>(watchers_.begin(), watchers_.end())) {
      call->finishing = true;
      write_status(call);
    }
  }
  accepting_ = false;
  double limit = grace_s < 0 ? 0 : (grace_s >= 1 ? grace_s : NO_LIMIT_S);
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(limit)));
}

int listen_unix(const std::string& path) {
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path) return -1;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ::unlink(path.c_str());
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, 64) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

int Front::run() {
  int listener = -1;
  if (shared()) {
    listener = listen_unix(workers_socket_);
    if (listener < 0) {
      control_.send(READY, 0, "{\"error\":\"" + json_escape("cannot listen on " + workers_socket_) + "\"}");
      return 1;
    }
  } else {  // the front of one worker: the control socket is that worker's relay
    std::lock_guard<std::mutex> lock(calls_lock_);
    workers_.push_back(nullptr);
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address_, grpc::InsecureServerCredentials(), &port);
  builder.RegisterAsyncGenericService(&generic_);
  builder.SetMaxReceiveMessageSize(max_message_bytes_);
  builder.SetMaxSendMessageSize(-1);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, reuseport_ ? 1 : 0);
  queue_ = builder.AddCompletionQueue();
  server_ = builder.BuildAndStart();
  Relay& ready = control_;
  if (!server_ || port == 0) {
    std::string error = "could not listen on " + address_ + " (address in use or not available)";
    ready.send(READY, 0, "{\"error\":\"" + json_escape(error) + "\"}");
    if (server_) server_->Shutdown();
    queue_->Shutdown();
    void* tag;
    bool ok;
    while (queue_->Next(&tag, &ok)) {
    }
    return 1;
  }
  Worker* own = nullptr;
  std::thread control_thread, accept_thread;
  if (shared()) {
    control_thread = std::thread(&Front::read_control, this);
    accept_thread = std::thread(&Front::accept_workers, this, listener);
  } else {
    auto owned = std::make_unique<Worker>(::dup(control_fd_));
    own = owned.get();
    {
      std::lock_guard<std::mutex> lock(calls_lock_);
      workers_[0] = std::move(owned);
    }
    {
      std::lock_guard<std::mutex> lock(health_lock_);
      serving_.insert(own);
      statuses_[own];
    }
    own->reader = std::thread(&Front::read_worker, this, own);
  }
  accept_next();
  std::thread queue_thread(&Front::serve_queue, this);
  ready.send(READY, 0, "{\"port\":" + std::to_string(port) + "}");
  std::string host = address_.substr(0, address_.rfind(':'));
  log_line("info", "gRPC listening on " + host + ":" + std::to_string(port) + " (pid " + std::to_string(getpid()) +
                       (shared() ? ", native, shared by the workers)" : ", native)"));
  double grace;
  {
    std::unique_lock<std::mutex> lock(stop_lock_);
    stop_signal_.wait(lock, [&] { return stop_grace_ != -2; });
    grace = stop_grace_;
  }
  stop(grace);  // returns once every call has ended
  queue_->Shutdown();
  queue_thread.join();
  if (grace >= 0) {
    log_line("info", "gRPC stopped");
    ready.send(STOPPED, 0, "");
  }
  if (shared()) {
    ::shutdown(listener, SHUT_RDWR);
    accept_thread.join();
    ::close(listener);
    ::unlink(workers_socket_.c_str());
    control_.close();
    control_thread.join();
  }
  std::vector<Worker*> all;
  {
    std::lock_guard<std::mutex> lock(calls_lock_);
    for (auto& worker : workers_) all.push_back(worker.get());
  }
  for (Worker* worker : all) {
    worker->relay.close();
    if (worker->reader.joinable()) worker->reader.join();
  }
  return 0;
}

[[noreturn]] void usage(const char* error) {
  std::fprintf(stderr,
               "grpc_front: %s\nusage: grpc_front --fd FD --address HOST:PORT --max-message-bytes N "
               "[--workers-socket PATH] [--reuseport] [--log-level LEVEL]\n",
               error);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every lock for deadlock cycles (a debug aid, ~5 % of this front's CPU under load).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  int fd = -1;
  long long max_message_bytes = -1;
  bool reuseport = false;
  std::string address, workers_socket;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--fd") {
      fd = std::atoi(value().c_str());
    } else if (arg == "--address") {
      address = value();
    } else if (arg == "--max-message-bytes") {
      max_message_bytes = std::atoll(value().c_str());
    } else if (arg == "--workers-socket") {
      workers_socket = value();
    } else if (arg == "--reuseport") {
      reuseport = true;
    } else if (arg == "--log-level") {
      g_debug = value() == "debug";
    } else {
      usage(("unknown argument " + arg).c_str());
    }
  }
  if (fd < 0 || address.empty() || max_message_bytes < 0) usage("--fd, --address and --max-message-bytes are required");
  // Ends with its worker (which started it in a session of its own, so a terminal's Ctrl-C reaches the worker only).
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 0;
  signal(SIGPIPE, SIG_IGN);
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  int limit = max_message_bytes > INT32_MAX ? INT32_MAX : static_cast<int>(max_message_bytes);
  Front front(fd, workers_socket, address, limit, reuseport);
  return front.run();
}

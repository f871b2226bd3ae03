// safetensors.cpp: tensors <-> the safetensors byte layout, on top of the validated index.
#include "base/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/atomic_file.h"
#include "base/errors.h"
#include "base/safetensors_index.h"

namespace orthotron {

namespace {

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kBFloat16, "BF16"}, {at::kLong, "I64"},
    {at::kInt, "I32"},    {at::kShort, "I16"}, {at::kChar, "I8"},  {at::kByte, "U8"},       {at::kBool, "BOOL"},
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw FormatError("safetensors file '" + path + "': " + what);
}

/// Reads exactly `size` bytes at `offset`; FormatError naming what was being read on a short read.
void read_exactly(int fd, void* out, uint64_t size, uint64_t offset, const std::string& path, const std::string& what) {
  char* p = static_cast<char*>(out);
  while (size > 0) {
    const ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "reading " + what + " failed: " + std::strerror(errno));
    if (n == 0) fail(path, "short read of " + what + " (the file ended early)");
    p += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

/// Closes a descriptor on scope exit.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string safetensors_dtype_name(at::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return d.name;
  }
  throw FormatError(std::string("safetensors cannot store dtype ") + c10::toString(t));
}

at::ScalarType safetensors_dtype_from_name(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  throw FormatError("unknown safetensors dtype '" + name + "'");
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      std::map<std::string, std::string> metadata) {
  metadata.emplace("format", "pt");
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = metadata;
  std::vector<at::Tensor> blobs;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail(path, "a tensor cannot be named '__metadata__'");
    if (!tensor.defined()) fail(path, "tensor '" + name + "' is undefined");
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(cpu.scalar_type());
    } catch (const FormatError& e) {
      fail(path, "tensor '" + name + "': " + e.what());
    }
    const uint64_t nbytes = cpu.numel() * cpu.element_size();
    header[name] = {{"dtype", dtype}, {"shape", cpu.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    blobs.push_back(cpu);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(header_len >> (8 * i));

  AtomicFileWriter out(path);
  out.write(len_bytes, 8);
  out.write(text.data(), text.size());
  for (const auto& b : blobs) out.write(b.data_ptr(), b.numel() * b.element_size());
  out.commit();
}

SafetensorsContent load_safetensors(const std::string& path) {
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) fail(path, std::string("cannot open for reading: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) check_safetensors_header_length(0, file_size, path);

  unsigned char len_bytes[8];
  read_exactly(fd.fd, len_bytes, 8, 0, path, "the 8-byte header length");
  const uint64_t header_len = decode_safetensors_header_length(len_bytes);
  check_safetensors_header_length(header_len, file_size, path);  // before the header is allocated
  std::string text(header_len, '\0');
  read_exactly(fd.fd, text.data(), header_len, 8, path, "the header");
  const SafetensorsIndex index = parse_safetensors_header(text, file_size, path);

  // The entries tile the data section exactly, so these allocations add up to the file's size.
  SafetensorsContent out;
  out.metadata = index.metadata;
  for (const auto& e : index.entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(safetensors_dtype_from_name(e.dtype)));
    read_exactly(fd.fd, t.data_ptr(), e.end - e.begin, index.data_start + e.begin, path, "tensor '" + e.name + "'");
    out.tensors[e.name] = t;
  }
  return out;
}

}  // namespace orthotron

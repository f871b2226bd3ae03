// safetensors.cpp: the safetensors byte layout (u64 header length, JSON header, raw data).
#include "optim/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "parallel/errors.h"

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

void write_all(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, std::string("write failed: ") + std::strerror(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

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

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail(path, "cannot open '" + tmp + "' for writing: " + std::strerror(errno));
  try {
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(header_len >> (8 * i));
    write_all(fd, reinterpret_cast<const char*>(len_bytes), 8, path);
    write_all(fd, text.data(), text.size(), path);
    for (const auto& b : blobs) {
      write_all(fd, static_cast<const char*>(b.data_ptr()), b.numel() * b.element_size(), path);
    }
    if (::fsync(fd) != 0) fail(path, std::string("fsync failed: ") + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail(path, std::string("rename failed: ") + std::strerror(errno));
}

SafetensorsContent load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8)
    fail(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len_bytes[i]) << (8 * i);
  if (header_len > file_size - 8) {
    fail(path, "header length " + std::to_string(header_len) + " exceeds the file's remaining " +
                   std::to_string(file_size - 8) + " bytes");
  }
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  SafetensorsContent out;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value for '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    try {
      const at::ScalarType dtype = safetensors_dtype_from_name(entry.at("dtype").get<std::string>());
      const auto shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2 || offsets[0] > offsets[1]) fail(path, "tensor '" + name + "' has bad data_offsets");
      int64_t numel = 1;
      for (int64_t d : shape) {
        if (d < 0) fail(path, "tensor '" + name + "' has a negative dimension");
        numel *= d;
      }
      const uint64_t expect = static_cast<uint64_t>(numel) * c10::elementSize(dtype);
      if (offsets[1] - offsets[0] != expect) {
        fail(path, "tensor '" + name + "' spans " + std::to_string(offsets[1] - offsets[0]) +
                       " bytes but dtype x shape needs " + std::to_string(expect));
      }
      if (offsets[1] > data_size) fail(path, "tensor '" + name + "' runs past the end of the file");
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
      in.seekg(static_cast<std::streamoff>(data_start + offsets[0]));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(expect));
      if (!in) fail(path, "short read of tensor '" + name + "'");
      out.tensors[name] = t;
      spans.push_back({offsets[0], offsets[1], name});
    } catch (const nlohmann::json::exception& e) {
      fail(path, "entry '" + name + "' is malformed: " + e.what());
    } catch (const FormatError& e) {
      if (std::string(e.what()).rfind("safetensors file", 0) == 0) throw;
      fail(path, "tensor '" + name + "': " + e.what());
    }
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  uint64_t cursor = 0;
  for (const auto& s : spans) {
    if (s.begin != cursor) {
      fail(path, "tensor '" + s.name + "' starts at byte " + std::to_string(s.begin) + ", expected " +
                     std::to_string(cursor) + " (gap or overlap between tensors)");
    }
    cursor = s.end;
  }
  if (cursor != data_size) {
    fail(path, std::to_string(data_size - cursor) + " trailing bytes after the last tensor");
  }
  return out;
}

}  // namespace orthotron

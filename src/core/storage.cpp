#include "diffuse/core/storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "diffuse/core/error.h"

namespace diffuse {

std::shared_ptr<Storage> Storage::allocate(std::size_t nbytes) {
  std::shared_ptr<Storage> s(new Storage());
  // Round up so aligned_alloc's size requirement holds; allocate at least one block so that
  // data() is never null.
  const std::size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  DIFFUSE_CHECK(rounded >= nbytes, "Storage::allocate: size ", nbytes, " overflows");
  s->data_ = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  DIFFUSE_CHECK(s->data_ != nullptr, "out of memory: could not allocate ", nbytes, " bytes");
  s->nbytes_ = nbytes;
  s->kind_ = Kind::heap;
  return s;
}

std::shared_ptr<Storage> Storage::map_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DIFFUSE_CHECK(fd >= 0, "cannot open '", path.string(), "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    DIFFUSE_FAIL("cannot map '", path.string(), "': not a regular file");
  }
  std::shared_ptr<Storage> s(new Storage());
  s->kind_ = Kind::mapped_file;
  s->read_only_ = true;
  s->nbytes_ = static_cast<std::size_t>(st.st_size);
  if (s->nbytes_ > 0) {
    void* p = ::mmap(nullptr, s->nbytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    DIFFUSE_CHECK(p != MAP_FAILED, "cannot map '", path.string(), "': ", std::strerror(err));
    s->data_ = p;
    s->map_length_ = s->nbytes_;
  } else {
    ::close(fd);
  }
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* data, std::size_t nbytes, bool read_only,
                                         std::shared_ptr<void> owner) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->kind_ = Kind::borrowed;
  s->read_only_ = read_only;
  s->owner_ = std::move(owner);
  return s;
}

std::shared_ptr<Storage> Storage::subrange(std::size_t offset, std::size_t nbytes) {
  DIFFUSE_CHECK(offset <= nbytes_ && nbytes <= nbytes_ - offset, "Storage::subrange: bytes [",
                offset, ", ", offset + nbytes, ") are outside a storage of ", nbytes_, " bytes");
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = static_cast<char*>(data_) + offset;
  s->nbytes_ = nbytes;
  s->kind_ = kind_ == Kind::heap ? Kind::borrowed : kind_;
  s->read_only_ = read_only_;
  s->device_ = device_;
  // Keep the parent alive; the parent alone frees (or unmaps) the bytes.
  s->owner_ = shared_from_this();
  return s;
}

Storage::~Storage() {
  switch (kind_) {
    case Kind::heap:
      std::free(data_);
      break;
    case Kind::mapped_file:
      if (map_length_ > 0) ::munmap(data_, map_length_);
      break;
    case Kind::borrowed:
      break;
  }
}

}  // namespace diffuse

// Tensor: an owning, 64-byte aligned, row-major float32 buffer with a shape.
//
// Layers take raw pointers plus sizes (the shapes are written next to each argument); Tensor is
// only the owner of activations, caches and workspaces. Resize() keeps the allocation when the
// new size fits, so per-step buffers are allocated once and reused.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace openmoe {

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape) { Resize(std::move(shape)); }
  Tensor(std::initializer_list<int64_t> shape) { Resize(std::vector<int64_t>(shape)); }

  Tensor(Tensor&&) = default;
  Tensor& operator=(Tensor&&) = default;
  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);

  // Sets the shape; contents are zero-filled. Reuses the allocation when it is large enough.
  void Resize(std::vector<int64_t> shape);
  // Sets the shape without clearing (the contents are unspecified); for buffers fully overwritten.
  void ResizeUninitialized(std::vector<int64_t> shape);
  void Zero();

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

  int64_t size() const { return size_; }
  // Bytes of the allocation (what it costs in memory; >= size() floats).
  int64_t capacity_bytes() const { return capacity_ * static_cast<int64_t>(sizeof(float)); }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + shape_.size() : i]; }
  const std::vector<int64_t>& shape() const { return shape_; }
  std::string ShapeString() const;

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::vector<int64_t> shape_;
  int64_t size_ = 0;
  int64_t capacity_ = 0;
  std::unique_ptr<float, Free> data_;
};

// Number of elements of a shape.
int64_t NumElements(const std::vector<int64_t>& shape);

}  // namespace openmoe

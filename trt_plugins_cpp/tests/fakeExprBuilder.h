/*
 * A stand-in for TensorRT's IExprBuilder so that getOutputShapes can be exercised without a
 * builder (none exists in the lean runtime or on a machine without TensorRT). Every expression
 * carries its value; expressions made from `symbol()` report isConstant() == false, as the dynamic
 * dims of a real network do, so a plugin that reads getConstantValue() on them is caught.
 * Test code only: it fills the protected mImpl pointers of the public interface classes.
 */
#pragma once

#include "NvInferRuntime.h"

#include <algorithm>
#include <cstdint>
#include <deque>

namespace vmamba_test
{

class FakeDimImpl : public nvinfer1::apiv::VDimensionExpr
{
public:
    FakeDimImpl(int64_t value, bool constant)
        : mValue(value)
        , mConstant(constant)
    {
    }
    bool isConstant() const override { return mConstant; }
    int64_t getConstantValue() const override { return mConstant ? mValue : INT64_MIN; }
    bool isSizeTensor() const override { return false; }
    int64_t mValue;
    bool mConstant;
};

class FakeDimExpr : public nvinfer1::IDimensionExpr
{
public:
    explicit FakeDimExpr(FakeDimImpl* impl)
        : mFake(impl)
    {
        mImpl = impl;
    }
    ~FakeDimExpr() noexcept override = default;
    FakeDimImpl* mFake;
};

class FakeExprBuilderImpl : public nvinfer1::apiv::VExprBuilder
{
public:
    nvinfer1::IDimensionExpr const* make(int64_t value, bool constant)
    {
        mImpls.emplace_back(value, constant);
        mExprs.emplace_back(&mImpls.back());
        return &mExprs.back();
    }
    nvinfer1::IDimensionExpr const* constant(int64_t value) override
    {
        ++mNbConstants;
        return make(value, true);
    }
    nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op, nvinfer1::IDimensionExpr const& first,
        nvinfer1::IDimensionExpr const& second) override
    {
        ++mNbOperations;
        auto const& a = *static_cast<FakeDimExpr const&>(first).mFake;
        auto const& b = *static_cast<FakeDimExpr const&>(second).mFake;
        int64_t x = a.mValue, y = b.mValue, r = 0;
        using Op = nvinfer1::DimensionOperation;
        switch (op)
        {
        case Op::kSUM: r = x + y; break;
        case Op::kPROD: r = x * y; break;
        case Op::kMAX: r = std::max(x, y); break;
        case Op::kMIN: r = std::min(x, y); break;
        case Op::kSUB: r = x - y; break;
        case Op::kEQUAL: r = x == y; break;
        case Op::kLESS: r = x < y; break;
        case Op::kFLOOR_DIV: r = (y == 0) ? 0 : (x / y - ((x % y != 0) && ((x < 0) != (y < 0)))); break;
        case Op::kCEIL_DIV: r = (y == 0) ? 0 : (x / y + ((x % y != 0) && ((x < 0) == (y < 0)))); break;
        }
        return make(r, a.mConstant && b.mConstant);
    }
    nvinfer1::IDimensionExpr const* declareSizeTensor(
        int32_t, nvinfer1::IDimensionExpr const&, nvinfer1::IDimensionExpr const&) override
    {
        return nullptr;  // none of these plugins has data-dependent shapes
    }
    int32_t mNbConstants = 0;
    int32_t mNbOperations = 0;

private:
    std::deque<FakeDimImpl> mImpls;
    std::deque<FakeDimExpr> mExprs;
};

class FakeExprBuilder : public nvinfer1::IExprBuilder
{
public:
    FakeExprBuilder() { mImpl = &mFakeImpl; }
    ~FakeExprBuilder() noexcept override = default;
    // A dynamic (non-constant) dimension whose runtime value is `value`.
    nvinfer1::IDimensionExpr const* symbol(int64_t value) { return mFakeImpl.make(value, false); }
    static int64_t valueOf(nvinfer1::IDimensionExpr const* e) { return static_cast<FakeDimExpr const*>(e)->mFake->mValue; }
    FakeExprBuilderImpl mFakeImpl;
};

// An execution-context stand-in for attachToContext (these plugins ask it for nothing).
class FakeResourceContext : public nvinfer1::IPluginResourceContext
{
public:
    nvinfer1::IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    ~FakeResourceContext() noexcept override = default;
};

} // namespace vmamba_test

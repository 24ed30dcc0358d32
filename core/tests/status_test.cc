#include "flotilla/core/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace flotilla {
namespace {

Result<int> ParsePositive(int v) {
  if (v <= 0) return InvalidArgumentError("value " + std::to_string(v) + " is not positive");
  return v;
}

Result<int> DoubleIt(int v) {
  FLT_ASSIGN_OR_RETURN(int x, ParsePositive(v));
  return 2 * x;
}

Status CheckBoth(int a, int b) {
  FLT_RETURN_IF_ERROR(ParsePositive(a));
  FLT_RETURN_IF_ERROR(ParsePositive(b).status().WithContext("checking b"));
  return Status::Ok();
}

TEST(StatusTest, OkByDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, CarriesCodeMessageAndContext) {
  Status s = NotFoundError("no such key").WithContext("loading keys").WithContext("starting");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: no such key [while loading keys; while starting]");
}

TEST(StatusTest, ContextOnOkIsIgnored) { EXPECT_TRUE(Status::Ok().WithContext("x").context().empty()); }

TEST(ResultTest, ValueAndErrorPropagate) {
  auto good = DoubleIt(21);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  auto bad = DoubleIt(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.value_or(7), 7);
}

TEST(ResultTest, ReturnIfErrorStopsAtFirstFailure) {
  EXPECT_TRUE(CheckBoth(1, 2).ok());
  Status s = CheckBoth(1, 0);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  ASSERT_EQ(s.context().size(), 1u);
  EXPECT_EQ(s.context()[0], "checking b");
}

TEST(ResultTest, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 5);
}

TEST(ResultTest, OkStatusBecomesInternalError) {
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> r = InternalError("boom");
  EXPECT_DEATH((void)r.value(), "boom");
}

}  // namespace
}  // namespace flotilla

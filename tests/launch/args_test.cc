#include "launch/args.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) { return ParseCommandLine(args); }

TEST(ArgsTest, RepeatedJobAndSetKeepCommandLineOrder) {
  auto cl = Parse({"train", "--job", "a.pbtxt", "--set", "train.steps=3", "--job", "b.pbtxt",
                   "--set", "model.d_model=32"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->subcommand, "train");
  EXPECT_EQ(cl->GetAll("job"), (std::vector<std::string>{"a.pbtxt", "b.pbtxt"}));
  EXPECT_EQ(cl->GetAll("set"), (std::vector<std::string>{"train.steps=3", "model.d_model=32"}));
  EXPECT_FALSE(cl->Has("resume"));
}

TEST(ArgsTest, EqualsFormTakesEverythingAfterTheFirstEquals) {
  auto cl = Parse({"train", "--job=a.pbtxt", "--set=checkpoint.dir=/tmp/x=y", "--resume=never"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->GetAll("job"), std::vector<std::string>{"a.pbtxt"});
  EXPECT_EQ(cl->GetAll("set"), std::vector<std::string>{"checkpoint.dir=/tmp/x=y"});
  EXPECT_EQ(cl->Get("resume"), "never");
}

TEST(ArgsTest, BooleanFlagTakesNoValueOrTrueFalse) {
  auto on = Parse({"plan", "--job", "a.pbtxt", "--json"});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->GetBool("json"));
  auto off = Parse({"plan", "--json=false", "--job", "a.pbtxt"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->GetBool("json"));
  auto absent = Parse({"plan", "--job", "a.pbtxt"});
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->GetBool("json"));
  auto bad = Parse({"plan", "--job", "a.pbtxt", "--json=yes"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--json"), std::string::npos);
}

TEST(ArgsTest, UnknownFlagIsNamedWithItsSubcommand) {
  auto cl = Parse({"plan", "--job", "a.pbtxt", "--resume", "never"});
  ASSERT_FALSE(cl.ok());
  EXPECT_EQ(cl.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cl.status().message(), "unknown flag --resume for 'openmoe plan'");
}

TEST(ArgsTest, MissingValueIsAnError) {
  auto at_end = Parse({"train", "--job"});
  ASSERT_FALSE(at_end.ok());
  EXPECT_NE(at_end.status().message().find("--job needs a value"), std::string::npos);
  // A following flag is not taken as the value.
  auto before_flag = Parse({"plan", "--job", "--json"});
  ASSERT_FALSE(before_flag.ok());
  EXPECT_NE(before_flag.status().message().find("--job needs a value"), std::string::npos);
  auto empty = Parse({"plan", "--job="});
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("non-empty"), std::string::npos);
}

TEST(ArgsTest, UnknownOrMissingSubcommand) {
  auto unknown = Parse({"trian", "--job", "a"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "unknown subcommand 'trian'");
  auto none = Parse({});
  ASSERT_FALSE(none.ok());
  auto flag_first = Parse({"--job", "a", "train"});
  ASSERT_FALSE(flag_first.ok());
  EXPECT_NE(flag_first.status().message().find("subcommand"), std::string::npos);
}

TEST(ArgsTest, NonRepeatableFlagTwiceIsAnError) {
  auto cl = Parse({"train", "--job", "a", "--resume", "auto", "--resume", "never"});
  ASSERT_FALSE(cl.ok());
  EXPECT_EQ(cl.status().message(), "flag --resume given more than once");
}

TEST(ArgsTest, RequiredJobFlag) {
  auto cl = Parse({"plan", "--json"});
  ASSERT_FALSE(cl.ok());
  EXPECT_NE(cl.status().message().find("needs --job"), std::string::npos);
}

TEST(ArgsTest, StrayPositionalArgumentIsAnError) {
  auto cl = Parse({"train", "--job", "a.pbtxt", "b.pbtxt"});
  ASSERT_FALSE(cl.ok());
  EXPECT_NE(cl.status().message().find("'b.pbtxt'"), std::string::npos);
}

TEST(ArgsTest, HelpForms) {
  auto help = Parse({"help"});
  ASSERT_TRUE(help.ok());
  EXPECT_EQ(help->subcommand, "help");
  EXPECT_EQ(help->help_topic, "");
  auto topic = Parse({"help", "plan"});
  ASSERT_TRUE(topic.ok());
  EXPECT_EQ(topic->help_topic, "plan");
  auto dash = Parse({"train", "--bogus", "--help"});
  ASSERT_TRUE(dash.ok());
  EXPECT_EQ(dash->subcommand, "help");
  EXPECT_EQ(dash->help_topic, "train");
  EXPECT_FALSE(Parse({"help", "nope"}).ok());
}

TEST(ArgsTest, UsageListsSubcommandsAndFlags) {
  const std::string all = Usage();
  EXPECT_NE(all.find("train"), std::string::npos);
  EXPECT_NE(all.find("plan"), std::string::npos);
  const std::string train = Usage("train");
  EXPECT_NE(train.find("--job FILE"), std::string::npos);
  EXPECT_NE(train.find("--resume"), std::string::npos);
  EXPECT_EQ(train.find("--json"), std::string::npos);
  EXPECT_NE(Usage("plan").find("--json"), std::string::npos);
}

}  // namespace
}  // namespace openmoe

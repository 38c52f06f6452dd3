#include "common/limits/message_bounds.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace fedge::limits {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status CheckString(const std::string& path, const FieldDescriptor& field, size_t size,
                         const MessageBounds& bounds) {
  const bool bytes = field.type() == FieldDescriptor::TYPE_BYTES;
  const size_t max = bytes ? bounds.max_bytes_field : bounds.max_string;
  if (max > 0 && size > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", size, " bytes; at most ", max, " are allowed"));
  }
  return absl::OkStatus();
}

absl::Status Check(const Message& message, const MessageBounds& bounds, const std::string& path,
                   int depth) {
  if (depth > bounds.max_depth) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " nests messages deeper than ", bounds.max_depth));
  }
  const Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const std::string where = path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    if (field->is_repeated()) {
      const int n = reflection->FieldSize(message, field);
      if (static_cast<size_t>(n) > bounds.max_repeated) {
        return absl::InvalidArgumentError(absl::StrCat(where, " has ", n, " entries; at most ",
                                                       bounds.max_repeated, " are allowed"));
      }
      for (int i = 0; i < n; ++i) {
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
          std::string scratch;
          const std::string& s =
              reflection->GetRepeatedStringReference(message, field, i, &scratch);
          if (absl::Status st =
                  CheckString(absl::StrCat(where, "[", i, "]"), *field, s.size(), bounds);
              !st.ok()) {
            return st;
          }
        } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          // Map entries are messages of key and value, so map keys and values are checked here.
          if (absl::Status st = Check(reflection->GetRepeatedMessage(message, field, i), bounds,
                                      where, depth + 1);
              !st.ok()) {
            return st;
          }
        }
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
      std::string scratch;
      const std::string& s = reflection->GetStringReference(message, field, &scratch);
      if (absl::Status st = CheckString(where, *field, s.size(), bounds); !st.ok()) return st;
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (absl::Status st = Check(reflection->GetMessage(message, field), bounds, where, depth + 1);
          !st.ok()) {
        return st;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckBounds(const Message& message, const MessageBounds& bounds) {
  const size_t size = message.ByteSizeLong();
  if (size > bounds.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(message.GetDescriptor()->name(), " is ", size,
                                                     " bytes; at most ", bounds.max_bytes,
                                                     " are allowed"));
  }
  return Check(message, bounds, "", 0);
}

}  // namespace fedge::limits

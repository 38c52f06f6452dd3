// CSV input for edge sites: one header row, numeric feature columns, one label column.
//
// The dialect is RFC 4180 without line breaks inside quotes: cells are separated by commas,
// may be wrapped in double quotes ("" is a literal quote), and lines end in LF or CRLF.
// Spaces around a cell are ignored. Blank lines are allowed only at the end of the file.

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/data/dataset.h"

namespace fedge::data {
namespace {

// Splits one line into cells, unquoting and trimming them. On a quoting error returns false and
// sets *error and *bad_cell (0-based).
bool SplitCells(absl::string_view line, std::vector<std::string>* cells, std::string* error,
                size_t* bad_cell) {
  cells->clear();
  size_t i = 0;
  while (true) {
    // Leading spaces before the cell (or before its opening quote).
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::string cell;
    if (i < line.size() && line[i] == '"') {
      ++i;
      bool closed = false;
      while (i < line.size()) {
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cell.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        cell.push_back(line[i++]);
      }
      if (!closed) {
        *error = "unterminated quote (a quoted cell must end on the same line)";
        *bad_cell = cells->size();
        return false;
      }
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      if (i < line.size() && line[i] != ',') {
        *error = "unexpected text after a closing quote";
        *bad_cell = cells->size();
        return false;
      }
    } else {
      const size_t start = i;
      while (i < line.size() && line[i] != ',') ++i;
      cell = std::string(absl::StripAsciiWhitespace(line.substr(start, i - start)));
    }
    cells->push_back(std::move(cell));
    if (i >= line.size()) return true;
    ++i;  // the comma
  }
}

bool IsBlank(absl::string_view line) { return absl::StripAsciiWhitespace(line).empty(); }

std::string ColumnRef(const std::vector<std::string>& header, size_t index) {
  return absl::StrCat("column '", header[index], "' (", index + 1, ")");
}

}  // namespace

absl::StatusOr<Dataset> ParseCsv(absl::string_view text, const CsvOptions& options,
                                 absl::string_view source_name) {
  const std::string source(source_name);
  if (static_cast<int64_t>(text.size()) > options.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(source, " is ", text.size(),
                                                     " bytes; the limit is ", options.max_bytes));
  }
  auto error_at = [&source](int64_t line, absl::string_view message) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", line, ": ", message));
  };

  // A UTF-8 byte order mark is what spreadsheet exports put before the first header name.
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  std::vector<absl::string_view> lines;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == absl::string_view::npos) end = text.size();
    absl::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  // Blank lines at the end (a trailing newline, an editor's extra lines) are not rows.
  while (!lines.empty() && IsBlank(lines.back())) lines.pop_back();
  if (lines.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": empty file: no header row and no data rows"));
  }

  std::vector<std::string> header;
  std::string split_error;
  size_t bad_cell = 0;
  if (!SplitCells(lines[0], &header, &split_error, &bad_cell)) {
    return error_at(1, absl::StrCat("header cell ", bad_cell + 1, ": ", split_error));
  }
  std::unordered_map<std::string, size_t> column_index;
  for (size_t c = 0; c < header.size(); ++c) {
    if (header[c].empty()) {
      return error_at(1, absl::StrCat("column ", c + 1, " has an empty name"));
    }
    auto [it, inserted] = column_index.emplace(header[c], c);
    if (!inserted) {
      return error_at(1, absl::StrCat(ColumnRef(header, c), ": duplicate column name, also column ",
                                      it->second + 1));
    }
  }
  auto label_it = column_index.find(options.label_column);
  if (label_it == column_index.end()) {
    std::vector<std::string> quoted;
    quoted.reserve(header.size());
    for (const std::string& name : header) quoted.push_back(absl::StrCat("'", name, "'"));
    return error_at(1, absl::StrCat("no label column '", options.label_column,
                                    "'; the columns are ", absl::StrJoin(quoted, ", ")));
  }
  const size_t label_col = label_it->second;
  if (lines.size() == 1) {
    return error_at(1, "header only: no data rows");
  }

  Dataset data;
  for (size_t c = 0; c < header.size(); ++c) {
    if (c != label_col) data.feature_names.push_back(header[c]);
  }
  std::unordered_map<std::string, int64_t> label_by_name;
  for (size_t k = 0; k < options.label_names.size(); ++k) {
    label_by_name.emplace(options.label_names[k], static_cast<int64_t>(k));
  }
  const auto num_rows = static_cast<int64_t>(lines.size() - 1);
  data.features.reserve(static_cast<size_t>(num_rows) * data.feature_names.size());
  data.labels.reserve(static_cast<size_t>(num_rows));

  std::vector<std::string> cells;
  for (size_t l = 1; l < lines.size(); ++l) {
    const auto line_no = static_cast<int64_t>(l + 1);
    if (IsBlank(lines[l])) {
      return error_at(line_no, "blank line (blank lines are allowed only at the end of the file)");
    }
    if (!SplitCells(lines[l], &cells, &split_error, &bad_cell)) {
      const std::string where = bad_cell < header.size() ? ColumnRef(header, bad_cell)
                                                         : absl::StrCat("cell ", bad_cell + 1);
      return error_at(line_no, absl::StrCat(where, ": ", split_error));
    }
    if (cells.size() < header.size()) {
      return error_at(line_no,
                      absl::StrCat("too few cells: ", cells.size(), " of ", header.size(), "; ",
                                   ColumnRef(header, cells.size()), " and after are missing"));
    }
    if (cells.size() > header.size()) {
      return error_at(line_no,
                      absl::StrCat("too many cells: ", cells.size(), " but the header has ",
                                   header.size(), "; column ", header.size() + 1, " has no name"));
    }
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string& cell = cells[c];
      if (c == label_col) {
        int64_t label = -1;
        if (auto named = label_by_name.find(cell); named != label_by_name.end()) {
          label = named->second;
        } else if (!absl::SimpleAtoi(cell, &label) || label < 0 ||
                   (!options.label_names.empty() &&
                    label >= static_cast<int64_t>(options.label_names.size()))) {
          const std::string expected =
              options.label_names.empty()
                  ? std::string("a non-negative integer class index")
                  : absl::StrCat("one of ", absl::StrJoin(options.label_names, ", "),
                                 " or an index in [0, ", options.label_names.size(), ")");
          return error_at(line_no, absl::StrCat(ColumnRef(header, c), ": label '", cell,
                                                "' is not ", expected));
        }
        data.labels.push_back(label);
        continue;
      }
      float value = 0;
      if (cell.empty()) {
        return error_at(line_no,
                        absl::StrCat(ColumnRef(header, c), ": empty cell, expected a number"));
      }
      if (!absl::SimpleAtof(cell, &value)) {
        return error_at(line_no,
                        absl::StrCat(ColumnRef(header, c), ": '", cell, "' is not a number"));
      }
      if (!std::isfinite(value)) {
        // NaN or Inf in an input poisons every gradient it touches, so refuse it at the door.
        return error_at(line_no,
                        absl::StrCat(ColumnRef(header, c), ": '", cell,
                                     "' is not a finite number (NaN and Inf are refused)"));
      }
      data.features.push_back(value);
    }
  }
  return data;
}

absl::StatusOr<Dataset> ReadCsv(const std::string& path, const CsvOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    if (err == EACCES) {
      return absl::PermissionDeniedError(absl::StrCat(path, ": permission denied"));
    }
    return absl::UnavailableError(
        absl::StrCat(path, ": cannot open: ", err != 0 ? std::strerror(err) : "unknown error"));
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size > options.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, " is ", static_cast<int64_t>(size), " bytes; the limit is ",
                     options.max_bytes, ": split the file or raise the limit"));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::InternalError(absl::StrCat(path, ": read failed"));
  }
  return ParseCsv(contents.str(), options, path);
}

}  // namespace fedge::data

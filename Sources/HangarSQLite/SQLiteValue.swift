import Foundation

/// A value bound to a statement parameter.
enum SQLiteValue {
    case text(String)
    case blob(Data)
    case int64(Int64)
    case null
}

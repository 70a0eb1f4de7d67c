internal import Hummingbird
package enum HangarHTTPPlaceholder {}

import HangarRuntime
import NIOCore
import ServiceLifecycle

/// The apps' health probes as a `Service` of the daemon's group: probes every app with a `healthCheck` until the
/// group's graceful shutdown reaches it — after the node, later in the group, has drained every call — then closes
/// every app channel.
struct AppChannelHealthService: Service {
    let channels: AppChannels
    let group: any EventLoopGroup

    func run() async {
        await cancelWhenGracefulShutdown { await channels.watchHealth(on: group) }
        channels.closeAll()
    }
}
